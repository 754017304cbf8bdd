"""The bounded key/value window of streaming attention, shared by NEST's runner and the streaming WavLM.

A streaming step attends to the keys and values of some earlier frames (the left context) and of its own new
frames; afterwards only the latest ``keep_frames`` frames are kept. Frames run along dim -2 of any tensor
(..., frames, width): NEST keeps keys | values of every layer in one window (L[, B], heads, frames, 2 d_head),
the WavLM one window per layer with keys and values stacked in front (2, B, heads, frames, d_head).
"""

from __future__ import annotations

import torch
from torch import Tensor


class KeyValueWindow:
    """The latest ``keep_frames`` frames along dim -2, in a buffer (..., capacity, width) with room after them.

    Appending writes only the new frames. The kept frames move to the front only when the end of the buffer
    is reached, about every ``keep_frames // 4`` new frames: copying the whole window every step, as
    concatenation does, cost more than the step itself once a long stream's unlimited left context held a few
    thousand frames. The buffer grows by doubling up to ``keep_frames`` plus that room, so a short stream never
    holds a window-sized buffer. The buffer is made on the first append unless one is given.
    """

    def __init__(self, keep_frames: int, buffer: Tensor | None = None, frames: int = 0):
        self.keep_frames = keep_frames
        self.buffer = buffer  # (..., capacity, width); the window is ``frames`` frames from ``start`` along dim -2
        self.start = 0
        self.frames = frames
        self.appended = 0  # frames appended so far: tells whether a copy of the window is still current

    @staticmethod
    def room(keep_frames: int, new_frames: int) -> int:
        """Buffer frames to keep free after a window of ``keep_frames`` for appends of ``new_frames``."""
        return max(new_frames, keep_frames // 4)

    def view(self) -> Tensor:
        """(..., frames, width): the kept frames, oldest first; valid until the next append."""
        return self.buffer[..., self.start : self.start + self.frames, :]

    def append(self, new: Tensor) -> Tensor:
        """Add new frames (..., n, width). Returns (..., frames + n, width): the frames kept before and the new
        ones, which a step attends to; valid until the next append. Afterwards the window holds the latest
        ``keep_frames``."""
        n = new.shape[-2]
        if self.buffer is None:
            self.buffer = new.new_empty(*new.shape[:-2], self.room(self.keep_frames, n), new.shape[-1])
        if self.start + self.frames + n > self.buffer.shape[-2]:
            self._make_room(n)
        begin, end = self.start, self.start + self.frames
        self.buffer[..., end : end + n, :] = new
        self.frames = min(self.frames + n, self.keep_frames)
        self.start = end + n - self.frames
        self.appended += n
        return self.buffer[..., begin : end + n, :]

    def _make_room(self, n: int) -> None:
        """Move the kept frames to the front of a buffer with room for ``n`` more after them."""
        old = self.view()
        *lead, capacity, width = self.buffer.shape
        wanted = max(self.frames + n, min(2 * max(capacity, n), self.keep_frames + self.room(self.keep_frames, n)))
        if wanted > capacity:
            self.buffer = self.buffer.new_empty(*lead, wanted, width)
        else:
            old = old.clone()  # source and destination overlap
        self.buffer[..., : self.frames, :] = old
        self.start = 0

    def select(self, rows: list[int], dim: int) -> KeyValueWindow:
        """A copy holding only the entries ``rows`` of dimension ``dim`` (a batch of streams: the streams kept)."""
        if self.buffer is None:
            return KeyValueWindow(self.keep_frames)
        kept = self.view().index_select(dim, torch.tensor(rows, device=self.buffer.device))
        return KeyValueWindow(self.keep_frames, kept, self.frames)
