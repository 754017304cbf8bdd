"""Transformer part of the streaming WavLM: pre-LN layers sharing one relative position embedding.

Keys (i = layer): ``positional_embedding.conv.*``, ``relative_embedding.weight``,
``layers.i.{attention_norm, attention.*, feed_forward_norm, feed_forward.{in_proj, out_proj}}``.
No LayerNorm after the last layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nemo_streaming_ssl.core.kv_window import KeyValueWindow

from .attention import AttentionSpan, GatedRelPosAttention, plan_attention_spans
from .config import StreamingWavLMConfig
from .frontend import PositionalConv


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

    def forward(self, x: Tensor, spans: list[AttentionSpan], cache: KeyValueWindow | None) -> Tensor:
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
                caches: list[KeyValueWindow | None] | None, keep_frames: int) -> tuple[list[Tensor], list[KeyValueWindow | None]]:
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
            caches = [KeyValueWindow(keep_frames) if c is None else c for c in caches]
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

