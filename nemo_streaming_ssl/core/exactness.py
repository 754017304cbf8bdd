"""How far streamed output is from the one-shot forward: the one measure both models' tests, benchmarks and
reports use."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Difference:
    max_abs: float  # largest |got - want| of any element
    relative: float  # largest ||got - want|| / ||want|| (Frobenius) of any pair

    def __str__(self) -> str:
        return f"max abs {self.max_abs:.2e}, relative {self.relative:.2e}"


def difference(got: Tensor | Sequence[Tensor], want: Tensor | Sequence[Tensor]) -> Difference:
    """Compare a tensor (or each of a sequence of tensors, e.g. one per layer) with its reference of the same shape."""
    pairs = list(zip(got, want)) if isinstance(got, (list, tuple)) else [(got, want)]
    if isinstance(got, (list, tuple)) and len(got) != len(want):
        raise ValueError(f"got {len(got)} tensors to compare with {len(want)}")
    for a, b in pairs:
        if a.shape != b.shape:
            raise ValueError(f"shapes differ: {tuple(a.shape)} vs reference {tuple(b.shape)}")
    if not pairs or all(b.numel() == 0 for _, b in pairs):
        return Difference(0.0, 0.0)
    max_abs = max(float((a - b).abs().max()) for a, b in pairs if b.numel())
    relative = max(float((a - b).norm() / b.norm().clamp(min=torch.finfo(b.dtype).tiny)) for a, b in pairs if b.numel())
    return Difference(max_abs, relative)
