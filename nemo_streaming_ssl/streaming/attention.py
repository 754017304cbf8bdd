"""NeMo's relative-position attention with a key/value cache, for streaming steps of bounded cost.

NeMo's cache-aware streaming caches each layer's attention *input* for the left context and, at every
chunk, projects the whole cache again to keys and values and projects all 2K-1 relative positions
(K = cached + new frames) through ``linear_pos``: the cost of a chunk grows with the left context,
and a stream costs tens of offline forwards. This subclass changes only the streaming path:

* the cache holds projected keys and values per head, (B, heads, cached, 2 * d_head), so a chunk
  projects only its own frames and reads the cache in place; the module returns the new frames' keys
  and values (B, heads, T, 2 * d_head) as its next cache, and the runner appends them to each
  stream's cache (NeMo's fixed-size cache update would copy the whole cache in every layer);
* the relative positions are projected once into a table that the runner grows as needed
  (:func:`prepare_position_tables`), and a chunk takes the slice it needs.

The scores are NeMo's (content + ``rel_shift``-ed position terms, masked softmax with NeMo's
``INF_VAL``), split into cached and new keys; without a cache (the offline forward) the module is
NeMo's unchanged.
"""

from __future__ import annotations

import torch
from nemo.collections.asr.parts.submodules.multi_head_attention import INF_VAL, RelPositionMultiHeadAttention

from .class_swap import swap_class


class KeyValueCachedRelPositionAttention(RelPositionMultiHeadAttention):
    """``RelPositionMultiHeadAttention`` whose streaming cache holds keys and values (see the module doc).

    Cache layout (B, heads, cached frames, 2 * d_head): keys then values of each head, so that every
    product below reads the cache in place (no copy of the cache per layer).
    """

    position_table: torch.Tensor | None = None  # (1, heads, 2P-1, d_head): linear_pos of positions P-1 .. -(P-1)

    def forward(self, query, key, value, mask, pos_emb, cache=None):
        # Streaming steps only: reuse cached keys/values and the projected position table. Submodules'
        # forward is called directly: nn.Module's call machinery adds up over a small chunk's many calls.
        if cache is None:
            return super().forward(query, key, value, mask, pos_emb, cache)
        batch, frames, _ = query.shape
        heads, d_head = self.h, self.d_k
        new_kv = torch.cat(
            [
                self.linear_k.forward(key).view(batch, frames, heads, d_head),
                self.linear_v.forward(value).view(batch, frames, heads, d_head),
            ],
            dim=-1,
        ).transpose(1, 2)  # (B, h, T, 2d)
        cached = cache.shape[2]
        q = self.linear_q.forward(query).view(batch, frames, heads, d_head)
        q_content = (q + self.pos_bias_u).transpose(1, 2)
        q_position = (q + self.pos_bias_v).transpose(1, 2)
        content = torch.cat(
            [
                torch.matmul(q_content, cache[..., :d_head].transpose(-2, -1)),
                torch.matmul(q_content, new_kv[..., :d_head].transpose(-2, -1)),
            ],
            dim=-1,
        )  # (B, h, T, K), K = cached + new frames
        p = self._projected_positions(pos_emb, cached + frames, frames)
        position = self.rel_shift(torch.matmul(q_position, p.transpose(-2, -1)))[..., : content.size(-1)]
        scores = (content + position) / self.s_d_k
        if mask is not None:  # as NeMo's forward_attention
            mask = mask.unsqueeze(1)
            weights = torch.softmax(scores.masked_fill(mask, -INF_VAL), dim=-1).masked_fill(mask, 0.0)
        else:
            weights = torch.softmax(scores, dim=-1)
        out = torch.matmul(weights[..., :cached], cache[..., d_head:]) + torch.matmul(
            weights[..., cached:], new_kv[..., d_head:]
        )  # (B, h, T, d)
        return self.linear_out.forward(out.transpose(1, 2).reshape(batch, frames, heads * d_head)), new_kv

    def _projected_positions(self, pos_emb: torch.Tensor, key_frames: int, query_frames: int) -> torch.Tensor:
        """(1, h, K+T-1, d) linear_pos of relative positions K-1 .. -(T-1): all that the T newest queries
        have to the K keys (NeMo projects 2K-1, and rel_shift drops the others); from the table if it covers them."""
        table = self.position_table
        if table is None or table.size(2) < 2 * key_frames - 1:
            projected = self.linear_pos(pos_emb).view(1, -1, self.h, self.d_k).transpose(1, 2)  # K-1 .. -(K-1)
            return projected[:, :, : key_frames + query_frames - 1]
        centre = table.size(2) // 2  # index of relative position 0
        return table[:, :, centre - key_frames + 1 : centre + query_frames]


def use_key_value_cache(encoder) -> list[KeyValueCachedRelPositionAttention]:
    """Give the encoder's rel-pos attention modules the key/value streaming cache (offline forward unchanged).

    The class swap keeps parameters, state-dict keys and the offline forward as they are.
    """
    attention = [layer.self_attn for layer in encoder.layers]
    return swap_class(attention, RelPositionMultiHeadAttention, KeyValueCachedRelPositionAttention)


@torch.no_grad()
def prepare_position_tables(encoder, modules: list[KeyValueCachedRelPositionAttention], key_frames: int) -> None:
    """Make every table cover ``key_frames`` keys (relative positions up to key_frames-1 either way).

    Tables grow by doubling (capped by the encoder's positional table), so a growing left context costs
    about one projection of its final size in total.
    """
    have = modules[0].position_table
    if have is not None and have.size(2) >= 2 * key_frames - 1:
        return
    covered = (have.size(2) + 1) // 2 if have is not None else 0
    frames = max(key_frames, 2 * covered)
    if encoder.max_audio_length < frames:
        encoder.set_max_audio_length(frames)
    frames = min(frames, encoder.max_audio_length)
    pe = encoder.pos_enc.pe  # (1, 2M-1, D): positions M-1 .. -(M-1)
    centre = pe.size(1) // 2
    positions = pe[:, centre - frames + 1 : centre + frames]
    for attention in modules:
        projected = attention.linear_pos(positions).view(1, -1, attention.h, attention.d_k)
        attention.position_table = projected.transpose(1, 2).contiguous()
