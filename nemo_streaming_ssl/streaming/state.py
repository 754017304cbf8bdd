"""The explicit streaming state: everything the runner carries between pieces, per stream.

Nothing is hidden in the model: the encoder's caches live here, per stream, and are gathered into
a batch for each step (kept batched while the same streams keep stepping together). Shapes use
L = encoder layers, D = d_model, F = mel bins, K = conv kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .features import FeatureStreamState


class KeyValueWindow:
    """Keys | values of the latest ``keep_frames`` frames, along dim -2: per layer and head of one stream
    (L, heads, frames, 2 d_head), or of a batch of streams (L, B, heads, frames, 2 d_head).

    They live in a buffer (..., capacity, 2 d_head) with room after them, so appending a step writes only
    its new frames. The kept frames move to the front only when the end of the buffer is reached, about
    every ``keep_frames // 4`` new frames: copying the whole window every step, as concatenation does,
    cost more than the step itself once a long stream's unlimited left context held a few thousand
    frames. The buffer grows by doubling up to ``keep_frames`` plus that slack.
    """

    def __init__(self, buffer: torch.Tensor, keep_frames: int, frames: int = 0):
        self.buffer = buffer  # (..., capacity, 2 d_head); the window is its first ``frames`` along dim -2
        self.keep_frames = keep_frames
        self.start = 0
        self.frames = frames
        self.appended = 0  # frames appended so far: tells whether a copy of the window is still current

    def view(self) -> torch.Tensor:
        """(..., frames, 2 d_head): the kept frames, oldest first; valid until the next append."""
        return self.buffer[..., self.start : self.start + self.frames, :]

    @staticmethod
    def room(keep_frames: int, new_frames: int) -> int:
        """Buffer frames to keep free after a window of ``keep_frames`` for appends of ``new_frames``."""
        return max(new_frames, keep_frames // 4)

    def append(self, new: torch.Tensor) -> None:
        """Add new frames (..., n, 2 d_head); afterwards the window holds the latest ``keep_frames``."""
        n = new.shape[-2]
        if self.start + self.frames + n > self.buffer.shape[-2]:
            self._make_room(n)
        end = self.start + self.frames
        self.buffer[..., end : end + n, :] = new
        self.frames = min(self.frames + n, self.keep_frames)
        self.start = end + n - self.frames
        self.appended += n

    def _make_room(self, n: int) -> None:
        """Move the frames still kept after appending ``n`` to the front of a buffer with room for ``n``."""
        kept = min(self.frames, max(self.keep_frames - n, 0))
        old = self.buffer[..., self.start + self.frames - kept : self.start + self.frames, :]
        *lead, capacity, width = self.buffer.shape
        wanted = max(kept + n, min(2 * max(capacity, n), self.keep_frames + self.room(self.keep_frames, n)))
        if wanted > capacity:
            self.buffer = self.buffer.new_empty(*lead, wanted, width)
        else:
            old = old.clone()  # source and destination overlap
        self.buffer[..., :kept, :] = old
        self.start, self.frames = 0, kept


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
