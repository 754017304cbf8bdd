"""Distillation losses and similarity measures over per-layer hidden states."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def depth_weights(num_layers: int, first: float = 0.5, last: float = 1.0) -> list[float]:
    """Per-layer loss weights rising linearly with depth from ``first`` to ``last`` (published: 0.5..1.0)."""
    if num_layers == 1:
        return [last]
    return [first + (last - first) * k / (num_layers - 1) for k in range(num_layers)]


def mse(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared error over all elements of [B, T, D] tensors, computed in float32."""
    return F.mse_loss(student.float(), teacher.float())


def layer_mses(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """[L] mean squared error of each layer pair (each [B, T, D])."""
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student layers against {len(teacher)} teacher layers")
    return torch.stack([mse(s, t) for s, t in zip(student, teacher)])


def weighted_layer_mse(per_layer: Tensor, weights: Sequence[float]) -> Tensor:
    """Weighted mean of per-layer MSEs: sum(w_k * mse_k) / sum(w_k)."""
    w = per_layer.new_tensor(list(weights))
    return (w * per_layer).sum() / w.sum()


def layer_cosines(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """[L] cosine similarity of each layer pair, per frame over the feature axis, averaged over frames."""
    return torch.stack([F.cosine_similarity(s.float(), t.float(), dim=-1).mean() for s, t in zip(student, teacher)])
