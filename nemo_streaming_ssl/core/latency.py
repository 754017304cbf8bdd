"""Latency of a streaming model: one definition for both models of the project (plain Python, no torch).

Time is counted in samples from the start of the stream; sample i is recorded at time i and is in hand
at time i + 1. A streaming model describes itself by three numbers (:class:`FrameTiming`):

* output frame t *stands for* the ``frame_samples`` samples from ``t * frame_samples + start_offset_samples``
  (NEST: the 80 ms that end at the centre of its newest mel frame; WavLM: the 20 ms whose first frame to
  see them is t);
* frame t can be computed once ``t * frame_samples + ready_offset_samples`` samples are in hand (NEST: the end
  of its newest mel frame's analysis window; WavLM: sample 320 t);
* frames leave in chunks of ``chunk_frames`` (frames [k c, (k + 1) c)), each chunk when its last frame can.

**Latency** is the longest time any sample waits from being recorded until the frame that stands for it has
left, with compute taken as instantaneous. The *algorithmic latency* assumes the audio arrives sample by
sample; a caller that feeds pieces of P samples (each handed over when its last sample is in hand) adds
the wait for the piece, :meth:`FrameTiming.worst_wait_ms`. The worst sample is always the first one of a
chunk's first frame, so with samples arriving one by one

    algorithmic latency = chunk duration + the audio a frame reads beyond the span it stands for

NEST (10 ms hop, 25 ms window, 8x subsampling, chunk 5 frames): 400 + 12.5 = 412.5 ms; fully causal,
one-frame chunks: 80 + 12.5 = 92.5 ms. WavLM (20 ms frames, blocks of 4): 80 + 0 = 80 ms.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LatencyReport:
    frame_ms: float  # one output frame
    chunk_frames: int
    chunk_ms: float
    lookahead_frames: int  # the model's attention right context (0 for fully causal)
    window_overhang_ms: float  # audio a frame reads beyond the span it stands for (NEST: half a window)
    lookahead_ms: float  # audio after the end of a chunk's first frame that the frame waits for
    algorithmic_latency_ms: float
    first_output_ms: float  # audio in hand when the first chunk leaves

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"algorithmic latency {self.algorithmic_latency_ms:g} ms = chunk {self.chunk_frames} x "
            f"{self.frame_ms:g} ms frames ({self.chunk_ms:g} ms) + {self.window_overhang_ms:g} ms read beyond a frame; "
            f"lookahead of a chunk's first frame {self.lookahead_ms:g} ms; first output after "
            f"{self.first_output_ms:g} ms of audio"
        )


@dataclass(frozen=True)
class FrameTiming:
    """When a streaming model's output frames can leave, and which audio each stands for (module docstring)."""

    sample_rate: int
    frame_samples: int
    chunk_frames: int
    ready_offset_samples: float  # frame t can be computed once t * frame_samples + this many samples are in hand
    start_offset_samples: float  # frame t stands for the audio from t * frame_samples + this

    def __post_init__(self):
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {self.chunk_frames}")

    def leaves_at(self, frame: int, piece_samples: int = 1) -> float:
        """Time (samples) at which ``frame`` leaves: when the piece completing its chunk's last frame is in hand."""
        last = frame // self.chunk_frames * self.chunk_frames + self.chunk_frames - 1
        ready = last * self.frame_samples + self.ready_offset_samples
        return ready if piece_samples == 1 else math.ceil(ready / piece_samples) * piece_samples

    def worst_wait_ms(self, piece_samples: int = 1) -> float:
        """Latency when the audio comes in pieces of ``piece_samples`` (1: sample by sample, the algorithmic one).

        Every frame of a chunk leaves together, so the first frame of a chunk waits longest; the pattern repeats
        every lcm(chunk, piece) samples, so one such period (after the first, which starts the stream) is scanned.
        """
        if piece_samples < 1:
            raise ValueError(f"piece_samples must be >= 1, got {piece_samples}")
        chunk_samples = self.chunk_frames * self.frame_samples
        period_chunks = math.lcm(chunk_samples, piece_samples) // chunk_samples
        worst = max(
            self.leaves_at(k * self.chunk_frames, piece_samples)
            - (k * self.chunk_frames * self.frame_samples + self.start_offset_samples)
            for k in range(period_chunks, 2 * period_chunks)
        )
        return 1000.0 * worst / self.sample_rate

    def report(self, lookahead_frames: int) -> LatencyReport:
        ms = 1000.0 / self.sample_rate
        algorithmic = self.worst_wait_ms()
        return LatencyReport(
            frame_ms=self.frame_samples * ms,
            chunk_frames=self.chunk_frames,
            chunk_ms=self.chunk_frames * self.frame_samples * ms,
            lookahead_frames=lookahead_frames,
            window_overhang_ms=(self.ready_offset_samples - self.start_offset_samples - self.frame_samples) * ms,
            lookahead_ms=algorithmic - self.frame_samples * ms,
            algorithmic_latency_ms=algorithmic,
            first_output_ms=self.leaves_at(0) * ms,
        )
