"""The explicit streaming state: everything the runner carries between pieces, per stream.

Nothing is hidden in the model: the encoder's caches live here, per stream, and are gathered into
a batch for each step (kept batched while the same streams keep stepping together). Shapes use
L = encoder layers, D = d_model, F = mel bins, K = conv kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.kv_window import KeyValueWindow
from .features import FeatureStreamState


@dataclass
class GroupCache:
    """The attention caches of the streams of the latest batched step, as one batch (L, B, heads, frames,
    2 d_head), each stream's frames right-aligned (a shorter one's missing frames in front are zeros, masked).

    Streams that keep stepping together (real-time pieces) reuse it and append their new frames to it,
    instead of copying every stream's whole cache into a batch at every step. It is a copy of the streams'
    own windows as they were at ``appended``; once any of them steps without the others it is stale and
    the next batched step rebuilds it.
    """

    members: list[int]  # stream indices, in batch order
    window: KeyValueWindow
    appended: list[int]  # each member's own ``KeyValueWindow.appended`` that this copy matches


@dataclass
class EncoderStreamState:
    """One stream's encoder state."""

    pending_mels: torch.Tensor  # (F, p) final mel frames not yet consumed by the encoder
    history_mels: torch.Tensor  # (F, h) last consumed mel frames the causal subsampling still needs
    att_cache: KeyValueWindow  # keys | values of the last <= left context frames
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
    group_cache: GroupCache | None = None  # batched attention caches of the latest batched step
    num_steps: int = 0
    encoder_seconds: float = 0.0  # totals since the start: memory stays flat however long the stream
    feature_seconds: float = 0.0

    @property
    def batch_size(self) -> int:
        return len(self.streams)
