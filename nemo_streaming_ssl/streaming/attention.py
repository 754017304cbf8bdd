"""NeMo's relative-position attention with a key/value cache, for streaming steps of bounded cost.

NeMo's cache-aware streaming caches each layer's attention *input* for the left context and, at every
chunk, projects the whole cache again to keys and values and projects all 2K-1 relative positions
(K = cached + new frames) through ``linear_pos``: the cost of a chunk grows with the left context,
and a stream costs tens of offline forwards. This subclass changes only the streaming path:

* the cache holds projected keys and values, ``[K | V]`` of shape (B, cached, 2 * d_model), so a chunk
  projects only its own frames; the module returns the new frames' keys and values (B, T, 2 * d_model)
  as its next cache, and the runner appends them to each stream's cache (NeMo's fixed-size cache
  update would copy the whole cache in every layer);
* the relative positions are projected once into a table that the runner grows as needed
  (:func:`prepare_position_tables`), and a chunk takes the slice it needs.

Scores, masks, softmax and output are NeMo's own (``rel_shift``, ``forward_attention``); without a
cache (the offline forward) the module is NeMo's unchanged.
"""

from __future__ import annotations

import torch
from nemo.collections.asr.parts.submodules.multi_head_attention import RelPositionMultiHeadAttention


class KeyValueCachedRelPositionAttention(RelPositionMultiHeadAttention):
    """``RelPositionMultiHeadAttention`` whose streaming cache holds keys and values (see the module doc)."""

    position_table: torch.Tensor | None = None  # (1, 2P-1, d_model): linear_pos of positions P-1 .. -(P-1)

    def forward(self, query, key, value, mask, pos_emb, cache=None):
        # Streaming steps only: reuse cached keys/values and the projected position table.
        if cache is None:
            return super().forward(query, key, value, mask, pos_emb, cache)
        batch, frames, width = query.shape
        new_kv = torch.cat([self.linear_k(key), self.linear_v(value)], dim=-1)
        kv = torch.cat([cache, new_kv], dim=1)  # (B, K, 2D), K = cached + new frames
        k, v = (t.view(batch, -1, self.h, self.d_k).transpose(1, 2) for t in kv.split(width, dim=-1))
        q = self.linear_q(query).view(batch, frames, self.h, self.d_k)
        p = self._projected_positions(pos_emb, kv.shape[1]).view(1, -1, self.h, self.d_k).transpose(1, 2)
        content = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        position = self.rel_shift(torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1)))
        scores = (content + position[:, :, :, : content.size(-1)]) / self.s_d_k
        return self.forward_attention(v, scores, mask), new_kv

    def _projected_positions(self, pos_emb: torch.Tensor, key_frames: int) -> torch.Tensor:
        """linear_pos(pos_emb) for relative positions key_frames-1 .. -(key_frames-1), from the table if it covers them."""
        table = self.position_table
        if table is None or table.size(1) < 2 * key_frames - 1:
            return self.linear_pos(pos_emb)
        centre = table.size(1) // 2  # index of relative position 0
        return table[:, centre - key_frames + 1 : centre + key_frames]


def use_key_value_cache(encoder) -> list[KeyValueCachedRelPositionAttention]:
    """Give the encoder's rel-pos attention modules the key/value streaming cache (offline forward unchanged).

    The class swap keeps parameters, state-dict keys and the offline forward as they are.
    """
    modules = []
    for layer in encoder.layers:
        attention = layer.self_attn
        if type(attention) is RelPositionMultiHeadAttention:
            attention.__class__ = KeyValueCachedRelPositionAttention
        if not isinstance(attention, KeyValueCachedRelPositionAttention):
            raise TypeError(f"unexpected attention module {type(attention).__name__} in a rel_pos encoder")
        modules.append(attention)
    return modules


@torch.no_grad()
def prepare_position_tables(encoder, modules: list[KeyValueCachedRelPositionAttention], key_frames: int) -> None:
    """Make every table cover ``key_frames`` keys (relative positions up to key_frames-1 either way).

    Tables grow by doubling (capped by the encoder's positional table), so a growing left context costs
    about one projection of its final size in total.
    """
    have = modules[0].position_table
    if have is not None and have.size(1) >= 2 * key_frames - 1:
        return
    covered = (have.size(1) + 1) // 2 if have is not None else 0
    frames = max(key_frames, 2 * covered)
    if encoder.max_audio_length < frames:
        encoder.set_max_audio_length(frames)
    frames = min(frames, encoder.max_audio_length)
    pe = encoder.pos_enc.pe  # (1, 2M-1, D): positions M-1 .. -(M-1)
    centre = pe.size(1) // 2
    positions = pe[:, centre - frames + 1 : centre + frames]
    for attention in modules:
        attention.position_table = attention.linear_pos(positions)
