"""Which mel frames a streaming FastConformer frame depends on, and which frame predicts each NEST target.

Pure integer arithmetic on tensors (no NeMo import), so it can be tested exhaustively. Facts read in
nemo_toolkit 2.5.3:

* Causal conv subsampling (``causal_downsampling: true``, ``dw_striding``/``striding``) stacks
  log2(factor) convolutions of kernel 3, stride 2, padded 2 frames left and 1 right: encoder frame t
  depends on mel frames [factor*t - 2*(factor-1), factor*t] (for 8x: [8t-14, 8t]) and T mel frames give
  T -> T//2+1 per stage frames (about T/8 + 1).
* ``chunked_limited`` attention with ``att_context_size [left, right]`` groups frames into chunks of
  right+1; a frame attends to its own chunk and to the left/(right+1) chunks before it, in every layer, so
  its receptive field ends at the end of its chunk (all frames of a chunk are emitted together).
* ``regular`` attention with a finite right context adds ``right`` frames of lookahead per layer.
* The conformer convolution with ``conv_context_size: causal`` looks at no future frame.

A NEST target token k is the quantized stack of mel frames [factor*k, factor*k + factor - 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of a streaming encoder: causal subsampling, then attention with a finite lookahead.

    Frames are encoder frames (``subsampling_factor`` mel frames each, 80 ms for 8x) unless named ``mel``.
    """

    subsampling_factor: int = 8
    left_context_frames: int = -1  # att_context_size[0]; -1 = unlimited
    lookahead_frames: int = 0  # att_context_size[1]; must be >= 0 (finite) for streaming
    chunked: bool = True  # att_context_style == "chunked_limited"
    num_layers: int = 1  # lookahead accumulates over layers in "regular" style

    def __post_init__(self):
        if self.subsampling_factor < 2 or self.subsampling_factor & (self.subsampling_factor - 1):
            raise ValueError(f"subsampling_factor must be a power of two >= 2, got {self.subsampling_factor}")
        if self.lookahead_frames < 0:
            raise ValueError(f"lookahead_frames must be >= 0 (finite lookahead), got {self.lookahead_frames}")
        if self.left_context_frames < -1:
            raise ValueError(f"left_context_frames must be -1 (unlimited) or >= 0, got {self.left_context_frames}")

    @classmethod
    def from_att_context(
        cls, att_context_size: Sequence[int], att_context_style: str, subsampling_factor: int, num_layers: int
    ) -> "ReceptiveField":
        left, right = (int(v) for v in att_context_size)
        return cls(subsampling_factor, left, right, att_context_style == "chunked_limited", num_layers)

    @property
    def chunk_frames(self) -> int:
        """Frames emitted together: right+1 in chunked_limited style, 1 in regular style."""
        return self.lookahead_frames + 1 if self.chunked else 1

    @property
    def min_lookahead_frames(self) -> int:
        """Future encoder frames every frame sees (the last frame of a chunk sees none)."""
        return 0 if self.chunked else self.num_layers * self.lookahead_frames

    @property
    def max_lookahead_frames(self) -> int:
        """Future encoder frames the best-placed frame sees (the first frame of a chunk)."""
        return self.lookahead_frames if self.chunked else self.num_layers * self.lookahead_frames

    @property
    def subsampling_reach_mel(self) -> int:
        """Mel frames before factor*t that encoder frame t still sees through the causal subsampling."""
        return 2 * (self.subsampling_factor - 1)

    def last_frame_seen(self, frames: torch.Tensor) -> torch.Tensor:
        """(...) encoder frames -> (...) last encoder frame in their receptive field (unclamped to the length)."""
        if self.chunked:
            return (frames // self.chunk_frames + 1) * self.chunk_frames - 1
        return frames + self.num_layers * self.lookahead_frames

    def last_mel_frame(self, frames: torch.Tensor) -> torch.Tensor:
        """(...) encoder frames -> (...) last mel frame they depend on."""
        return self.subsampling_factor * self.last_frame_seen(frames)

    def subsampling_span_mel(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(...) encoder frames -> first and last mel frame of their subsampling input (first may be < 0: padding)."""
        last = self.subsampling_factor * frames
        return last - self.subsampling_reach_mel, last

    def attention_window(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(...) encoder frames -> first and last frame they attend to in one layer (first clamped at 0)."""
        if self.chunked:
            start = frames // self.chunk_frames * self.chunk_frames
            last = start + self.chunk_frames - 1
        else:
            start, last = frames, frames + self.lookahead_frames
        first = start - self.left_context_frames if self.left_context_frames >= 0 else torch.zeros_like(start)
        return first.clamp(min=0), last

    def covering_frame(self, tokens: torch.Tensor) -> torch.Tensor:
        """(...) token indices -> first encoder frame whose subsampling input holds all the token's mel frames.

        Token k is mel [f*k, f*k+f-1]; frame j holds [f*j - 2(f-1), f*j], so j = k+1 is the first.
        """
        return tokens + 1

    def prediction_frame(self, tokens: torch.Tensor) -> torch.Tensor:
        """(...) token indices -> the encoder frame that predicts each token (may be < 0: no such frame).

        The earliest-emitted frame whose receptive field covers the whole token. In regular style that is
        frame k+1 - layers*right. In chunked_limited style every frame of the chunk holding frame k+1 is
        emitted at the same moment with the same receptive field; a softmax per frame cannot predict several
        tokens, so the tie is broken one to one: a chunk's i-th newly covered token goes to its i-th frame,
        which is frame k+1. Both cases: covering frame minus the lookahead every frame has.
        """
        return self.covering_frame(tokens) - self.min_lookahead_frames


def token_prediction_frames(
    token_lengths: torch.Tensor, encoded_lengths: torch.Tensor, num_tokens: int, field: ReceptiveField
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which encoder frame predicts each target token, and which tokens can be predicted at all.

    Args:
        token_lengths: (B,) whole tokens in each utterance (mel frames // subsampling_factor).
        encoded_lengths: (B,) encoder frames of each utterance.
        num_tokens: K, the token axis of the batch.
        field: the receptive field of the encoder for this batch's attention context.
    Returns:
        frames: (B, K) long, the predicting frame of every token (0 where invalid, safe for gather).
        valid: (B, K) bool, the token exists and its predicting frame lies within the encoder length.
    """
    tokens = torch.arange(num_tokens, device=token_lengths.device).unsqueeze(0)
    frames = field.prediction_frame(tokens)
    covering = field.covering_frame(tokens)
    valid = (
        (tokens < token_lengths.unsqueeze(1))
        & (frames >= 0)
        & (covering < encoded_lengths.unsqueeze(1))  # the frame that holds the token was produced
    )
    frames = torch.where(valid, frames, torch.zeros_like(frames))
    return frames, valid


TARGET_ALIGNMENTS = ("earliest_complete", "same_index")


def same_index_frames(
    token_lengths: torch.Tensor, encoded_lengths: torch.Tensor, num_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``target_alignment: same_index``: token k is scored at encoder frame k, as offline NEST does.

    This is "truncate to the common length" (NVIDIA-NeMo PR #15589's proposal for causal encoders): outputs,
    masks and tokens cut to min(frames, tokens). For a causal encoder frame k sees mel frames up to 8k, so
    all of token k ([8k, 8k+7]) but its first mel frame lies in the frame's future. Kept as an ablation of
    ``earliest_complete`` (``token_prediction_frames``).

    Args:
        token_lengths: (B,) whole tokens in each utterance.
        encoded_lengths: (B,) encoder frames of each utterance.
        num_tokens: K, the token axis of the batch.
    Returns:
        frames: (B, K) long, k for every token (0 where invalid); valid: (B, K) bool, k < both lengths.
    """
    tokens = torch.arange(num_tokens, device=token_lengths.device).unsqueeze(0)
    valid = (tokens < token_lengths.unsqueeze(1)) & (tokens < encoded_lengths.unsqueeze(1))
    frames = torch.where(valid, tokens, torch.zeros_like(tokens))
    return frames, valid
