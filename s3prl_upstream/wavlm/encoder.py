"""Transformer part of the streaming WavLM: pre-LN layers sharing one relative position embedding.

Keys (i = layer): ``positional_embedding.conv.*``, ``relative_embedding.weight``,
``layers.i.{attention_norm, attention.*, feed_forward_norm, feed_forward.{in_proj, out_proj}}``.
No LayerNorm after the last layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import AttentionSpan, GatedRelPosAttention, plan_attention_spans
from .config import StreamingWavLMConfig
from .frontend import PositionalConv


class KVCache:
    """One layer's keys and values of the latest ``keep_frames`` frames of a stream.

    Held in preallocated buffers [B, H, capacity, head_dim] with the valid frames at [start, start + frames):
    appending a step writes only its new frames, and the valid frames move to the front only when the
    end of the buffer is reached (every ``SLACK_STEPS`` steps), instead of copying the whole cache each
    step as concatenation would.
    """

    SLACK_STEPS = 8

    def __init__(self, keep_frames: int, keys: Tensor | None = None, values: Tensor | None = None,
                 start: int = 0, frames: int = 0) -> None:
        self.keep_frames = keep_frames
        self.keys, self.values = keys, values
        self.start, self.frames = start, frames

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """keys, values: [B, H, T, head_dim] of new frames -> [B, H, frames + T, head_dim] views of the cached
        and new ones, valid until the next append. Afterwards the cache holds the last ``keep_frames``."""
        new = keys.shape[2]
        total = self.frames + new
        if self.keys is None or self.start + total > self.keys.shape[2]:
            self._compact(capacity=max(total, self.keep_frames + self.SLACK_STEPS * new), like=keys)
        end = self.start + total
        self.keys[:, :, end - new : end] = keys
        self.values[:, :, end - new : end] = values
        everything = self.keys[:, :, self.start : end], self.values[:, :, self.start : end]
        kept = min(total, self.keep_frames)
        self.start, self.frames = end - kept, kept
        return everything

    def _compact(self, capacity: int, like: Tensor) -> None:
        """Move the valid frames to the front of buffers of at least ``capacity`` frames."""
        batch, heads, _, head_dim = like.shape
        old = None if self.keys is None else (self.keys[:, :, self.start : self.start + self.frames],
                                              self.values[:, :, self.start : self.start + self.frames])
        if self.keys is None or self.keys.shape[2] < capacity:
            self.keys, self.values = (like.new_empty(batch, heads, capacity, head_dim) for _ in range(2))
        elif old is not None:
            old = tuple(t.clone() for t in old)  # source and destination may overlap
        if old is not None:
            self.keys[:, :, : self.frames] = old[0]
            self.values[:, :, : self.frames] = old[1]
        self.start = 0

    def select(self, rows: list[int]) -> "KVCache":
        """A copy keeping batch rows ``rows``."""
        if self.keys is None:
            return KVCache(self.keep_frames)
        span = slice(self.start, self.start + self.frames)
        return KVCache(self.keep_frames, self.keys[rows, :, span], self.values[rows, :, span], 0, self.frames)


class FeedForward(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.in_proj = nn.Linear(dim, ffn_dim)
        self.out_proj = nn.Linear(ffn_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.out_proj(self.dropout(F.gelu(self.in_proj(x)))))


class TransformerLayer(nn.Module):
    """x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, cfg: StreamingWavLMConfig) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(cfg.dim)
        self.attention = GatedRelPosAttention(cfg.dim, cfg.num_heads, cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)
        self.feed_forward_norm = nn.LayerNorm(cfg.dim)
        self.feed_forward = FeedForward(cfg.dim, cfg.ffn_dim, cfg.dropout)

    def forward(self, x: Tensor, spans: list[AttentionSpan], cache: KVCache | None) -> Tensor:
        """x: [B, T, D] -> [B, T, D]; ``cache`` (streaming) supplies earlier keys/values and takes x's."""
        x = x + self.dropout(self.attention(self.attention_norm(x), spans, cache))
        return x + self.feed_forward(self.feed_forward_norm(x))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: StreamingWavLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.positional_embedding = PositionalConv(cfg.dim, cfg.conv_pos, cfg.conv_pos_groups)
        self.relative_embedding = nn.Embedding(cfg.num_buckets, cfg.num_heads)
        self.layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.num_layers))

    def forward(self, x: Tensor, first_frame: int, frame_limits: Tensor | None,
                caches: list[KVCache | None] | None, keep_frames: int) -> tuple[list[Tensor], list[KVCache | None]]:
        """Run all layers on new frames x: [B, T, D] (positional term already added).

        first_frame: global index of x[:, 0]. frame_limits: [B] valid frames per utterance, or None (all
        frames so far are valid). caches: per layer keys/values of the frames before x (None: none yet).
        keep_frames: how many of the latest keys/values to keep per layer (0: none, one-shot use).
        Returns (per-layer outputs [B, T, D], per-layer caches, updated in place). Padded frames of the
        outputs are zero.
        """
        cfg = self.cfg
        caches = list(caches) if caches is not None else [None] * len(self.layers)
        if keep_frames:
            caches = [KVCache(keep_frames) if c is None else c for c in caches]
        if x.shape[1] == 0:
            return [x] * len(self.layers), caches
        num_cached = 0 if caches[0] is None else caches[0].frames
        spans = plan_attention_spans(self.relative_embedding.weight, cfg.num_buckets, cfg.max_distance, cfg.causal,
                                     cfg.block_frames, cfg.window_size, x.shape[1], num_cached, first_frame,
                                     frame_limits, x.dtype)
        padded = None
        if frame_limits is not None:
            frames = first_frame + torch.arange(x.shape[1], device=x.device)
            padded = (frames[None, :] >= frame_limits.to(x.device)[:, None]).unsqueeze(-1)
        hidden = []
        for layer, cache in zip(self.layers, caches):
            x = layer(x, spans, cache)
            if padded is not None:
                x = x.masked_fill(padded, 0.0)
            hidden.append(x)
        return hidden, caches

