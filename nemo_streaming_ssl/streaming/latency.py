"""NEST's frame timing for the shared latency definition (nemo_streaming_ssl.core.latency), in milliseconds
(no NeMo import).

* Mel frame g reads raw samples [g*hop - pad + (n_fft - win)/2, ... + win): its analysis window
  (``win`` samples, centred in the ``n_fft`` frame; ``pad`` = zeros the STFT puts before sample 0).
  Its centre is at g*hop - pad + n_fft/2 (= g*hop for NeMo's default centred STFT).
* Causal subsampling by f: encoder frame t is final once mel frame f*t is; it stands for the audio
  of one encoder frame (f*hop samples, 80 ms for NeMo) that ends at the centre of mel frame f*t.
* The runner emits encoder frames in chunks of ``chunk_frames`` (a multiple of the attention chunk,
  lookahead + 1 frames): a chunk leaves as soon as the analysis window of its newest mel frame is
  complete. So a frame reads half an analysis window beyond the span it stands for, and

      algorithmic latency = chunk_frames * f * hop / sr  +  win / 2 / sr

  e.g. NeMo's 10 ms hop, 25 ms window, 8x subsampling, ``att_context_size [-1, 4]``, one attention chunk
  (5 frames): 400 ms + 12.5 ms = 412.5 ms; fully causal, 80 ms chunks: 80 + 12.5 = 92.5 ms.
* ``first_output_ms`` is the audio needed before the first chunk leaves: its newest mel frame is
  f*(chunk_frames - 1), whose window ends at that frame's centre plus win/2.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.latency import FrameTiming, LatencyReport


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


def algorithmic_latency(
    geometry: WindowGeometry,
    *,
    sample_rate: int,
    subsampling_factor: int,
    chunk_frames: int,
    lookahead_frames: int,
) -> LatencyReport:
    """Latency of a streaming encoder from its feature and chunk geometry (see the module docstring)."""
    return frame_timing(geometry, sample_rate=sample_rate, subsampling_factor=subsampling_factor,
                        chunk_frames=chunk_frames).report(lookahead_frames)


def frame_timing(geometry: WindowGeometry, *, sample_rate: int, subsampling_factor: int, chunk_frames: int
                 ) -> FrameTiming:
    """Encoder frame t leaves with its chunk once mel frame f*t's window is in hand, and stands for the
    f*hop samples before that mel frame's centre."""
    frame_samples = subsampling_factor * geometry.hop_samples
    return FrameTiming(
        sample_rate=sample_rate,
        frame_samples=frame_samples,
        chunk_frames=chunk_frames,
        ready_offset_samples=geometry.window_end_sample(0),
        start_offset_samples=geometry.centre_sample(0) - frame_samples,
    )
