"""Algorithmic latency of a cache-aware streaming encoder, in milliseconds (no NeMo import).

Definitions (all times from the start of the stream, compute assumed instantaneous):

* Mel frame g reads raw samples [g*hop - pad + (n_fft - win)/2, ... + win): its analysis window
  (``win`` samples, centred in the ``n_fft`` frame; ``pad`` = zeros the STFT puts before sample 0).
  Its centre is at g*hop - pad + n_fft/2 (= g*hop for NeMo's default centred STFT).
* Causal subsampling by f: encoder frame t is final once mel frame f*t is; it stands for the audio
  of one encoder frame (f*hop samples, 80 ms for NeMo) that ends at the centre of mel frame f*t.
* The runner emits encoder frames in chunks of ``chunk_frames`` (a multiple of the attention chunk,
  lookahead + 1 frames): a chunk leaves as soon as the analysis window of its newest mel frame is
  complete.
* **Algorithmic latency** is the longest time any audio sample waits between arriving and leaving in
  the encoder frame that stands for it. The worst sample is the first one of a chunk's first frame:

      latency = chunk_frames * f * hop / sr  +  win / 2 / sr
              = chunk duration              +  half an analysis window

  e.g. NeMo's 10 ms hop, 25 ms window, 8x subsampling, ``att_context_size [-1, 4]``, one attention chunk
  (5 frames): 400 ms + 12.5 ms = 412.5 ms; fully causal, 80 ms chunks: 80 + 12.5 = 92.5 ms.
* ``lookahead_ms`` is the audio after the end of a chunk's first frame that the frame waits for:
  (chunk_frames - 1) frames plus the half window.
* ``first_output_ms`` is the audio needed before the first chunk leaves: its newest mel frame is
  f*(chunk_frames - 1), whose window ends at that frame's centre plus win/2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class WindowGeometry:
    """Where mel frame g reads the signal, in raw sample indices (see the module docstring)."""

    hop_samples: int
    win_length: int
    n_fft: int
    pad_samples: int  # zeros the STFT puts before sample 0 (n_fft/2 centred, NeMo's exact_pad otherwise)

    @property
    def win_offset(self) -> int:
        """torch.stft centres a window shorter than n_fft inside the n_fft frame."""
        return (self.n_fft - self.win_length) // 2

    def window_end_sample(self, frame: int) -> int:
        """One past the last raw sample that mel frame ``frame`` reads."""
        return frame * self.hop_samples - self.pad_samples + self.win_offset + self.win_length

    def centre_sample(self, frame: int) -> float:
        return frame * self.hop_samples - self.pad_samples + self.n_fft / 2


@dataclass(frozen=True)
class LatencyReport:
    frame_ms: float  # one encoder frame (f * hop)
    chunk_frames: int
    chunk_ms: float
    lookahead_frames: int  # attention right context of the model (0 for fully causal)
    window_overhang_ms: float  # audio after a mel frame's centre that its window reads (half a window)
    lookahead_ms: float
    algorithmic_latency_ms: float
    first_output_ms: float

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"algorithmic latency {self.algorithmic_latency_ms:g} ms = chunk {self.chunk_frames} x "
            f"{self.frame_ms:g} ms frames ({self.chunk_ms:g} ms) + half window {self.window_overhang_ms:g} ms; "
            f"lookahead of a chunk's first frame {self.lookahead_ms:g} ms; first output after "
            f"{self.first_output_ms:g} ms of audio"
        )


def algorithmic_latency(
    geometry: WindowGeometry,
    *,
    sample_rate: int,
    subsampling_factor: int,
    chunk_frames: int,
    lookahead_frames: int,
) -> LatencyReport:
    """Latency of a streaming encoder from its feature and chunk geometry (see the module docstring)."""
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    ms = 1000.0 / sample_rate
    frame_samples = subsampling_factor * geometry.hop_samples
    overhang = geometry.window_end_sample(0) - geometry.centre_sample(0)
    first_newest_mel = subsampling_factor * (chunk_frames - 1)
    return LatencyReport(
        frame_ms=frame_samples * ms,
        chunk_frames=chunk_frames,
        chunk_ms=chunk_frames * frame_samples * ms,
        lookahead_frames=lookahead_frames,
        window_overhang_ms=overhang * ms,
        lookahead_ms=((chunk_frames - 1) * frame_samples + overhang) * ms,
        algorithmic_latency_ms=(chunk_frames * frame_samples + overhang) * ms,
        first_output_ms=geometry.window_end_sample(first_newest_mel) * ms,
    )
