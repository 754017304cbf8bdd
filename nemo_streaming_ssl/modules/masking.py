"""Causal block masking for streaming NEST: whole target tokens, with unmasked context before every span.

Definitions (see STREAMING_NEST.md, "Causal masking"). A token is ``combine_time_steps`` mel frames
(the subsampling factor, 8 = 80 ms); an utterance of T mel frames has K = T // combine_time_steps tokens
and its last T - K*combine_time_steps frames are never masked. A mask is a set of *spans*:

* every span is ``block_size / combine_time_steps`` consecutive tokens (shorter only where the utterance
  ends), so a token is either fully masked or not touched;
* every span is preceded by at least ``left_context_size`` unmasked tokens of the same utterance (the
  first span starts at token >= left_context_size), and two spans are at least max(1, left_context_size)
  tokens apart, so spans never merge;
* gaps are the minimum plus a geometric number of tokens whose mean makes the expected fraction of
  masked tokens ``mask_prob`` (for utterances much longer than a span).

Masked mel frames are replaced by a fixed mask embedding (random N(0, 0.1) per feature, frozen, as
NeMo's RandomBlockMasking does) or by ``mask_value``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from nemo.core.classes import NeuralModule
from nemo.core.neural_types import AcousticEncodedRepresentation, LengthsType, NeuralType


class CausalBlockMasking(NeuralModule):
    """Token-aligned span masking with guaranteed unmasked left context (drop-in for RandomBlockMasking).

    Args:
        feat_in: mel features per frame.
        mask_prob: expected fraction of tokens masked, in (0, span/(span+min gap)].
        block_size: span length in mel frames (10 ms each); a multiple of combine_time_steps.
        combine_time_steps: mel frames per target token (= encoder subsampling factor).
        left_context_size: unmasked tokens (80 ms each for 8x) required before every span.
        mask_value: constant for masked frames; None: a random frozen embedding.
        freeze: keep the mask embedding fixed.
    """

    def __init__(
        self,
        feat_in: int,
        mask_prob: float = 0.4,
        block_size: int = 40,
        combine_time_steps: int = 8,
        left_context_size: int = 0,
        mask_value: Optional[float] = None,
        freeze: bool = True,
    ):
        super().__init__()
        if combine_time_steps < 1:
            raise ValueError(f"masking.combine_time_steps must be >= 1, got {combine_time_steps}")
        if block_size <= 0 or block_size % combine_time_steps:
            raise ValueError(
                f"masking.block_size={block_size} mel frames must be a positive multiple of "
                f"masking.combine_time_steps={combine_time_steps} so that spans cover whole tokens; "
                f"use e.g. {max(1, round(block_size / combine_time_steps)) * combine_time_steps}"
            )
        if left_context_size < 0:
            raise ValueError(f"masking.left_context_size must be >= 0 tokens, got {left_context_size}")
        self.combine_time_steps = combine_time_steps
        self.span_tokens = block_size // combine_time_steps
        self.left_context_size = left_context_size
        self.min_gap_tokens = max(1, left_context_size)
        max_prob = self.span_tokens / (self.span_tokens + self.min_gap_tokens)
        if not 0.0 < mask_prob <= max_prob:
            raise ValueError(
                f"masking.mask_prob={mask_prob} must lie in (0, {max_prob:.3f}]: spans of {self.span_tokens} tokens "
                f"need >= {self.min_gap_tokens} unmasked tokens between them (masking.left_context_size="
                f"{left_context_size}); lower mask_prob or left_context_size, or raise block_size"
            )
        self.mask_prob = mask_prob
        # Mean extra gap (tokens) beyond the minimum that makes the masked fraction mask_prob.
        self.mean_extra_gap = self.span_tokens / mask_prob - self.span_tokens - self.min_gap_tokens

        if mask_value is None:
            self.mask_embedding = nn.Parameter(torch.randn(feat_in) * 0.1)
        else:
            self.mask_embedding = nn.Parameter(torch.full((feat_in,), float(mask_value)), requires_grad=False)
        if freeze:
            self.freeze()

    @property
    def input_types(self):
        return {
            "input_feats": NeuralType(('B', 'D', 'T'), AcousticEncodedRepresentation()),
            "input_lengths": NeuralType(tuple('B'), LengthsType()),
        }

    @property
    def output_types(self):
        return {
            "masked_feats": NeuralType(('B', 'D', 'T'), AcousticEncodedRepresentation()),
            "masks": NeuralType(('B', 'D', 'T'), AcousticEncodedRepresentation()),
        }

    def _extra_gaps(self, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
        """(B, N) geometric extra gaps with mean ``mean_extra_gap`` tokens."""
        if self.mean_extra_gap <= 0:
            return torch.zeros(shape, dtype=torch.long, device=device)
        stay = self.mean_extra_gap / (1.0 + self.mean_extra_gap)  # P(gap grows by one more token)
        uniform = 1.0 - torch.rand(shape, device=device)  # (0, 1]
        return torch.floor(torch.log(uniform) / math.log(stay)).long()

    def sample_token_mask(self, token_lengths: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """(B,) whole tokens per utterance -> (B, num_tokens) bool, True where a token is masked."""
        batch, device = token_lengths.shape[0], token_lengths.device
        if num_tokens == 0:
            return torch.zeros(batch, 0, dtype=torch.bool, device=device)
        max_spans = num_tokens // (self.span_tokens + self.min_gap_tokens) + 2
        steps = self._extra_gaps((batch, max_spans), device)
        steps[:, 1:] += self.span_tokens + self.min_gap_tokens
        steps[:, 0] += self.left_context_size
        starts = steps.cumsum(dim=1)  # (B, N) first token of each span
        ends = starts + self.span_tokens
        # +1 at a span start, -1 after its end; a running sum > 0 marks masked tokens (spans never overlap).
        edges = torch.zeros(batch, num_tokens + 1, dtype=torch.long, device=device)
        edges.scatter_add_(1, starts.clamp(max=num_tokens), torch.ones_like(starts))
        edges.scatter_add_(1, ends.clamp(max=num_tokens), -torch.ones_like(ends))
        inside = edges.cumsum(dim=1)[:, :num_tokens] > 0
        return inside & (torch.arange(num_tokens, device=device) < token_lengths.unsqueeze(1))

    def forward(self, input_feats: torch.Tensor, input_lengths: torch.Tensor):
        """
        Args:
            input_feats: (B, D, T) mel features.
            input_lengths: (B,) valid mel frames.
        Returns:
            masked_feats: (B, D, T) features with masked frames replaced by the mask embedding.
            masks: (B, D, T) 1.0 at masked frames, else 0.0.
        """
        num_frames = input_feats.shape[-1]
        num_tokens = num_frames // self.combine_time_steps
        token_mask = self.sample_token_mask(input_lengths // self.combine_time_steps, num_tokens)
        frame_mask = token_mask.repeat_interleave(self.combine_time_steps, dim=1)
        frame_mask = nn.functional.pad(frame_mask, (0, num_frames - frame_mask.shape[1])).unsqueeze(1)
        embedding = self.mask_embedding.to(input_feats.dtype).view(1, -1, 1)
        masked_feats = torch.where(frame_mask, embedding, input_feats)
        return masked_feats, frame_mask.expand_as(input_feats).to(input_feats.dtype)
