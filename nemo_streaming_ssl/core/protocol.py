"""The streaming protocol both models follow, and the one loop that feeds audio through it.

    state = model.new_state(batch_size, sample_rate=16000)   # independent streams
    outputs = model.feed(state, pieces)                       # pieces of any size; per stream a StreamOutput
    outputs = model.flush(state)                              # the rest, as the one-shot forward gives it

``model`` is NEST's :class:`StreamingEncoderRunner` or the :class:`StreamingWavLM`. Each call returns, per
stream, the frames that became final during the call; joined, they equal the model's one-shot forward.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
from torch import Tensor

from .latency import FrameTiming, LatencyReport


def cat_or_none(parts: Sequence[Tensor | None], dim: int) -> Tensor | None:
    return None if parts[0] is None else torch.cat(list(parts), dim=dim)


@dataclass
class StreamOutput:
    """What one stream emitted during one ``feed``/``flush`` call."""

    first_frame: int  # index of frames[0] in the stream's output
    frames: Tensor  # (T, D) the last layer's output
    hidden_states: Tensor | None = None  # (L, T, D) every layer's output, where the model gives them

    @classmethod
    def join(cls, parts: Sequence[StreamOutput]) -> StreamOutput:
        """Successive outputs of one stream as one (from the first one's first frame)."""
        return replace(parts[0], frames=torch.cat([p.frames for p in parts]),
                       hidden_states=cat_or_none([p.hidden_states for p in parts], 1))


class StreamingModel(Protocol):
    """What a streaming model offers (see the module docstring)."""

    @property
    def timing(self) -> FrameTiming: ...

    @property
    def latency(self) -> LatencyReport: ...

    def new_state(self, batch_size: int = 1, *, sample_rate: int) -> Any: ...

    def feed(self, state: Any, pieces: Any, *, last: bool | Sequence[bool] = False) -> list[StreamOutput]: ...

    def flush(self, state: Any) -> list[StreamOutput]: ...


def feed_in_pieces(model: StreamingModel, state: Any, audio: Tensor, piece_samples: int | Sequence[int]
                   ) -> Iterator[list[StreamOutput]]:
    """Feed ``audio`` (S,) for one stream or (B, S) for B streams in pieces, then flush; yields each call's
    outputs, so a caller can time or check every call. ``piece_samples``: one size, or sizes used in turn."""
    sizes = [piece_samples] if isinstance(piece_samples, int) else list(piece_samples)
    start, i = 0, 0
    while start < audio.shape[-1]:
        size = sizes[i % len(sizes)]
        yield model.feed(state, audio[..., start : start + size])
        start, i = start + size, i + 1
    yield model.flush(state)


def join(calls: Sequence[list[StreamOutput]]) -> list[StreamOutput]:
    """Per stream, the outputs of successive calls joined into one."""
    return [type(parts[0]).join(parts) for parts in zip(*calls)]


def stream_audio(model: StreamingModel, audio: Tensor, piece_samples: int | Sequence[int], *, sample_rate: int
                 ) -> list[StreamOutput]:
    """Stream ``audio`` (S,) or (B, S) through a fresh state in pieces; per stream, everything it emitted."""
    state = model.new_state(1 if audio.dim() == 1 else audio.shape[0], sample_rate=sample_rate)
    return join(list(feed_in_pieces(model, state, audio, piece_samples)))
