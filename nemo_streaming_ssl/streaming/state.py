"""The explicit streaming state: everything the runner carries between pieces, per stream.

Nothing is hidden in the model: the encoder's caches live here, per stream, and are gathered into
a batch for each step. Shapes use L = encoder layers, D = d_model, F = mel bins, K = conv kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .features import FeatureStreamState


class KeyValueWindow:
    """Per layer, the keys | values of a stream's latest ``keep_frames`` frames (the next chunk's left context).

    They live in a buffer (L, heads, capacity, 2 d_head) with room after them, so appending a step
    writes only its new frames. The kept frames move to the front only when the end of the buffer is
    reached, about every ``keep_frames // 4`` new frames: copying the whole window every step, as
    concatenation does, cost more than the step itself once a long stream's unlimited left context
    held a few thousand frames. The buffer grows by doubling up to ``keep_frames`` plus that slack.
    """

    def __init__(self, empty: torch.Tensor, keep_frames: int):
        self.buffer = empty  # (L, heads, 0, 2 d_head) to start
        self.keep_frames = keep_frames
        self.start = 0
        self.frames = 0

    def view(self) -> torch.Tensor:
        """(L, heads, frames, 2 d_head): the kept frames, oldest first; valid until the next append."""
        return self.buffer[:, :, self.start : self.start + self.frames]

    def append(self, new: torch.Tensor) -> None:
        """Add new frames (L, heads, n, 2 d_head); afterwards the window holds the latest ``keep_frames``."""
        n = new.shape[2]
        if self.start + self.frames + n > self.buffer.shape[2]:
            self._make_room(n)
        end = self.start + self.frames
        self.buffer[:, :, end : end + n] = new
        self.frames = min(self.frames + n, self.keep_frames)
        self.start = end + n - self.frames

    def _make_room(self, n: int) -> None:
        """Move the frames still kept after appending ``n`` to the front of a buffer with room for ``n``."""
        kept = min(self.frames, max(self.keep_frames - n, 0))
        old = self.buffer[:, :, self.start + self.frames - kept : self.start + self.frames]
        capacity = self.buffer.shape[2]
        wanted = max(kept + n, min(2 * max(capacity, n), self.keep_frames + max(n, self.keep_frames // 4)))
        if wanted > capacity:
            layers, heads, _, width = self.buffer.shape
            self.buffer = self.buffer.new_empty(layers, heads, wanted, width)
        else:
            old = old.clone()  # source and destination overlap
        self.buffer[:, :, :kept] = old
        self.start, self.frames = 0, kept


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
    num_steps: int = 0
    encoder_seconds: float = 0.0  # totals since the start: memory stays flat however long the stream
    feature_seconds: float = 0.0

    @property
    def batch_size(self) -> int:
        return len(self.streams)
