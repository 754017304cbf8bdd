"""One streaming step of NeMo's ConformerEncoder, with attention masks for the new frames only.

NeMo's ``forward_internal`` with caches builds its attention mask for the whole (cache + chunk) square
and keeps the chunk's rows: O((cache + chunk)^2) work per chunk, which dominates long streams with
unlimited left context. This step calls the encoder's own modules (subsampling, positional encoding,
Conformer layers, output projection) in the same order with the same caches, but builds the mask
rows of the new frames only: O(chunk x (cache + chunk)).

Mask rules (as ``ConformerEncoder._create_masks``): positions count from the start of the cached
frames; key k is visible to the query at position q when both are real frames of the stream
(cached or new, not padding) and, for ``chunked_limited`` with chunks of C = right + 1 frames,
0 <= q//C - k//C <= left//C (any distance back for left = -1); for ``regular`` (right 0),
q - left <= k <= q.
"""

from __future__ import annotations

import torch


def attention_masks(
    encoder, cache_frames: int, new_frames: int, cache_lengths: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pad_mask (B, T), att_mask (B, T, K)) for T new frames after ``cache_frames`` cached slots; True = hidden.

    ``cache_lengths`` (B,): real cached frames of each stream (right-aligned in the slots);
    ``lengths`` (B,): real new frames of each stream (the rest of T is padding).
    """
    device = lengths.device
    left, right = encoder.att_context_size
    keys = torch.arange(cache_frames + new_frames, device=device)
    queries = keys[cache_frames:]
    if encoder.att_context_style == "chunked_limited":
        chunk = right + 1
        behind = queries.unsqueeze(1) // chunk - keys.unsqueeze(0) // chunk
        context = (behind >= 0) & (behind <= (left // chunk if left >= 0 else keys.numel()))
    else:  # regular with right context 0 (anything else is refused by compat.py)
        distance = queries.unsqueeze(1) - keys.unsqueeze(0)
        context = (distance >= 0) & (distance <= (left if left >= 0 else keys.numel()))
    real_keys = (keys.unsqueeze(0) >= cache_frames - cache_lengths.unsqueeze(1)) & (
        keys.unsqueeze(0) < cache_frames + lengths.unsqueeze(1)
    )  # (B, K)
    real_queries = torch.arange(new_frames, device=device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    visible = context.unsqueeze(0) & real_keys.unsqueeze(1) & real_queries.unsqueeze(2)
    return ~real_queries, ~visible


def encoder_step(
    encoder,
    mels: torch.Tensor,
    mel_lengths: torch.Tensor,
    drop_frames: int,
    att_cache: torch.Tensor,
    att_cache_lengths: torch.Tensor,
    conv_cache: torch.Tensor,
    keep_hidden: bool = False,
):
    """One chunk through the encoder.

    Args:
        mels: (B, F, M) mel frames: the subsampling history of each stream, then its new frames.
        mel_lengths: (B,) real mel frames of each stream.
        drop_frames: leading subsampled frames that only the history produced (emitted before).
        att_cache: (L, B, heads, C, 2 d_head) keys | values of the cached frames, right-aligned; C = slots.
        att_cache_lengths: (B,) real cached frames per stream.
        conv_cache: (L, B, D, K-1) last inputs of each layer's causal depthwise convolution.
        keep_hidden: also return the hidden states of the new frames (else None).
    Returns:
        encoded (B, D, T), lengths (B,), new keys | values (L, B, heads, T, 2 d_head), next conv cache,
        hidden states (L+1, B, T, D): the first layer's input (``pos_enc`` output), then each layer's output.
    """
    x, lengths = encoder.pre_encode(x=mels.transpose(1, 2), lengths=mel_lengths)
    x = x[:, drop_frames:]
    lengths = (lengths.to(torch.int64) - drop_frames).clamp(min=0)
    cache_frames = att_cache.shape[3]
    x, pos_emb = encoder.pos_enc(x=x, cache_len=cache_frames)
    pad_mask, att_mask = attention_masks(encoder, cache_frames, x.shape[1], att_cache_lengths, lengths)
    hidden = [x] if keep_hidden else None
    new_kv, next_conv = [], []
    for layer, layer_att_cache, layer_conv_cache in zip(encoder.layers, att_cache, conv_cache):
        x, kv, conv = layer(
            x=x,
            att_mask=att_mask,
            pos_emb=pos_emb,
            pad_mask=pad_mask,
            cache_last_channel=layer_att_cache,
            cache_last_time=layer_conv_cache,
        )
        new_kv.append(kv)
        next_conv.append(conv)
        if hidden is not None:
            hidden.append(x)
    if encoder.out_proj is not None:
        x = encoder.out_proj(x)
    return x.transpose(1, 2), lengths, torch.stack(new_kv), torch.stack(next_conv), (
        None if hidden is None else torch.stack(hidden)
    )
