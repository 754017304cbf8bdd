"""The explicit streaming state: everything the runner carries between pieces, per stream.

Nothing is hidden in the model: the encoder's caches live here, per stream, and are gathered into
a batch for each step. Shapes use L = encoder layers, D = d_model, F = mel bins, K = conv kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .features import FeatureStreamState


@dataclass
class EncoderStreamState:
    """One stream's encoder state.

    ``att_cache`` holds, per layer, the keys and values of the last frames (the left context of the
    next chunk); it grows from 0 to the left context and then stays that size.
    """

    pending_mels: torch.Tensor  # (F, p) final mel frames not yet consumed by the encoder
    history_mels: torch.Tensor  # (F, h) last consumed mel frames the causal subsampling still needs
    att_cache: torch.Tensor  # (L, heads, c, 2 d_head) keys | values per head, c <= left context
    conv_cache: torch.Tensor  # (L, D, K-1) last inputs of each causal depthwise convolution
    mels_consumed: int = 0
    frames_emitted: int = 0
    steps: int = 0


@dataclass
class StreamState:
    features: FeatureStreamState
    encoder: EncoderStreamState
    ended: bool = False  # no more audio will come; remaining frames are emitted as the offline forward would
    done: bool = False  # every frame emitted


@dataclass
class StepRecord:
    """One encoder step (one chunk) for a group of streams."""

    streams: list[int]
    frames: list[int]  # frames emitted per stream of the group
    seconds: float  # encoder (and decoder) compute of the step


@dataclass
class StreamingState:
    """The state of a batch of independent streams (any lengths, ending at any time)."""

    streams: list[StreamState]
    sample_rate: int
    last_steps: list[StepRecord] = field(default_factory=list)  # steps of the latest feed/flush only
    num_steps: int = 0
    encoder_seconds: float = 0.0  # totals since the start: memory stays flat however long the stream
    feature_seconds: float = 0.0

    @property
    def batch_size(self) -> int:
        return len(self.streams)
