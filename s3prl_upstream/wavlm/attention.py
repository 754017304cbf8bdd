"""Block-causal sliding-window self-attention with WavLM's gated relative position bias.

Causal rule (STREAMING_WAVLM.md, "Architecture and checkpoint layout"): frames form blocks of C = lookahead + 1.
A query at frame p sees keys k with end - window <= k < end, end = min((p // C + 1) * C, frames so far).
Non-causal: every valid key.
Padded queries (p >= an utterance's length) see only themselves, so no softmax row is empty and valid
frames never see padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nemo_streaming_ssl.core.kv_window import KeyValueWindow


def relative_position_bucket(relative: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """Bidirectional buckets of key - query distances: half the buckets per sign, exact below
    num_buckets // 4, log-spaced up to max_distance (saturating beyond). relative: int tensor, any shape."""
    half = num_buckets // 2
    max_exact = half // 2
    distance = relative.abs()
    # Same float32 operation order as Microsoft's WavLM, so boundary distances land in the same bucket.
    log_part = (torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
                * (half - max_exact)).to(torch.long)
    far = (max_exact + log_part).clamp(max=half - 1)
    return (relative > 0).to(torch.long) * half + torch.where(distance < max_exact, distance, far)


@dataclass
class AttentionSpan:
    """A tile of queries and the keys it may see (local indices), with its bias terms.

    bias: [H, Tq, Tk] relative position bias before gating. mask: [B or 1, 1, Tq, Tk] additive (0 / -inf).
    """

    queries: slice
    keys: slice
    bias: Tensor
    mask: Tensor


def plan_attention_spans(table: Tensor, num_buckets: int, max_distance: int, causal: bool, block_frames: int,
                         window_frames: int, num_queries: int, num_cached: int, first_frame: int,
                         frame_limits: Tensor | None, dtype: torch.dtype) -> list[AttentionSpan]:
    """Tiles for ``num_queries`` new frames starting at global frame ``first_frame`` whose keys are
    ``num_cached`` cached frames followed by the new ones.

    table: [num_buckets, H] relative embedding. frame_limits: [B] frames per utterance (global count), or
    None for ``first_frame + num_queries`` (all frames so far). Causal tiles hold at most one window of
    queries so memory stays O(T * window) for long inputs.
    """
    device = table.device
    key_start = first_frame - num_cached  # global frame of key 0
    num_keys = num_cached + num_queries
    if frame_limits is None:
        limits = torch.full((1, 1, 1), first_frame + num_queries, device=device)
        min_limit = first_frame + num_queries
    else:
        limits = frame_limits.to(device).view(-1, 1, 1)
        min_limit = int(frame_limits.min())
    if causal:
        tile = max(block_frames, window_frames // block_frames * block_frames)
        ranges = []
        for q0 in range(0, num_queries, tile):
            q1 = min(q0 + tile, num_queries)
            # A window ending at the last frame so far reaches further back than its block's end would.
            first_end = min(((first_frame + q0) // block_frames + 1) * block_frames, min_limit)
            last_end = ((first_frame + q1 - 1) // block_frames + 1) * block_frames
            ranges.append((q0, q1, max(0, first_end - window_frames - key_start), min(num_keys, last_end - key_start)))
    else:
        ranges = [(0, num_queries, 0, num_keys)]

    spans = []
    for q0, q1, k0, k1 in ranges:
        q_pos = torch.arange(first_frame + q0, first_frame + q1, device=device).view(1, -1, 1)
        k_pos = torch.arange(key_start + k0, key_start + k1, device=device).view(1, 1, -1)
        relative = (k_pos - q_pos)[0]
        bias = F.embedding(relative_position_bucket(relative, num_buckets, max_distance), table).permute(2, 0, 1)
        if causal:
            end = torch.minimum((q_pos // block_frames + 1) * block_frames, limits)
            allowed = (k_pos >= end - window_frames) & (k_pos < end)
        else:
            allowed = k_pos < limits
        allowed = torch.where(q_pos < limits, allowed, k_pos == q_pos)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, float("-inf"))
        spans.append(AttentionSpan(slice(q0, q1), slice(k0, k1), bias, mask.unsqueeze(1)))
    return spans


class GatedRelPosAttention(nn.Module):
    """Multi-head attention with fused ``qkv_proj`` (rows q, k, v) and WavLM's gated relative position bias.

    The gate per frame and head comes from the (layer-normed) input split into heads:
    ``gru_rel_pos_linear`` (head_dim -> 8), summed in two groups of 4, sigmoid -> a, b;
    gate = a * (b * gru_rel_pos_const - 1) + 2; the logits get gate * bias.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.qkv_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.gru_rel_pos_linear = nn.Linear(self.head_dim, 8)
        self.gru_rel_pos_const = nn.Parameter(torch.ones(1, num_heads, 1, 1))

    def gate(self, h: Tensor) -> Tensor:
        """h: [B, T, D] -> gate [B, H, T, 1]."""
        batch, frames, _ = h.shape
        # Summing the 4 outputs of each group equals one linear map with the group's weights summed.
        weight = self.gru_rel_pos_linear.weight.view(2, 4, self.head_dim).sum(1)
        bias = self.gru_rel_pos_linear.bias.view(2, 4).sum(1)
        a, b = torch.sigmoid(F.linear(h.view(batch, frames, self.num_heads, self.head_dim), weight, bias)).unbind(-1)
        gate = a * (b * self.gru_rel_pos_const.view(1, 1, self.num_heads) - 1.0) + 2.0
        return gate.transpose(1, 2).unsqueeze(-1)

    def forward(self, h: Tensor, spans: list[AttentionSpan], cache: KeyValueWindow | None) -> Tensor:
        """h: [B, T, D] new frames -> [B, T, D]. cache (streaming): keys and values [2, B, H, M, head_dim] of the
        M earlier frames the spans index first; h's keys and values are appended to it."""
        batch, frames, dim = h.shape
        qkv = self.qkv_proj(h).view(batch, frames, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv  # each [B, H, T, head_dim]
        if cache is not None:
            k, v = cache.append(qkv[1:])
        gate = self.gate(h)
        dropout = self.dropout if self.training else 0.0
        outputs = [
            F.scaled_dot_product_attention(
                q[:, :, s.queries], k[:, :, s.keys], v[:, :, s.keys],
                attn_mask=torch.addcmul(s.mask, gate[:, :, s.queries], s.bias), dropout_p=dropout)
            for s in spans
        ]
        out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
        return self.out_proj(out.transpose(1, 2).reshape(batch, frames, dim))
