"""Incremental log-mel features that equal NeMo's ``FilterbankFeatures`` on the whole signal.

NeMo computes features for a whole utterance: preemphasis over the signal, a centred STFT (zero
padding of n_fft/2 on both ends), magnitude, power, mel matrix, log with a guard. Every step
but the ends is local in time, so we keep a small overlap buffer and emit a mel frame as soon as the
part of the signal its analysis window touches has arrived. At the end of the stream we pad with
zeros exactly as the centred STFT does, and emit the remaining frames up to NeMo's ``seq_len``.

Per-utterance normalisation (``normalize: per_feature`` / ``all_features``) needs the whole signal
and is refused by :mod:`nemo_streaming_ssl.streaming.compat`; ``NA`` and fixed mean/std stream, as does the
fixed per-mel-bin map of ``FixedNormMelSpectrogramPreprocessor`` (``feature_map``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from nemo.collections.asr.parts.preprocessing.features import FilterbankFeatures, normalize_batch

from .compat import NotStreamableError, featurizer_problems, window_geometry


@dataclass
class FeatureStreamState:
    """What one stream's feature extractor carries between pieces.

    ``buffer`` holds preemphasised samples in padded coordinates (index 0 is the first sample of the
    left STFT padding) starting at ``buffer_start``; it keeps only what frames not yet emitted need.
    """

    buffer: torch.Tensor
    buffer_start: int = 0
    num_samples: int = 0  # raw samples received so far
    next_frame: int = 0  # index of the next mel frame to emit
    last_sample: torch.Tensor | None = None  # previous raw sample, for preemphasis across pieces
    finished: bool = False


class StreamingLogMel:
    """Log-mel features of NeMo's ``FilterbankFeatures``, computed piece by piece.

    Args:
        featurizer: the model's ``preprocessor.featurizer`` (eval mode: no dither, no augmentation).
        feature_map: a frame-local map the preprocessor applies after the featurizer, on (..., D, T)
            (``FixedNormMelSpectrogramPreprocessor.normalize_features``); see :meth:`for_preprocessor`.
    """

    def __init__(self, featurizer: FilterbankFeatures, feature_map: Callable[[torch.Tensor], torch.Tensor] | None = None):
        problems = featurizer_problems(featurizer)
        if problems:
            raise NotStreamableError("these features cannot be streamed exactly:\n  - " + "\n  - ".join(problems))
        self.featurizer = featurizer
        self.geometry = window_geometry(featurizer)
        self.num_mels = featurizer.nfilt
        self.feature_map = feature_map

    @classmethod
    def for_preprocessor(cls, preprocessor) -> StreamingLogMel:
        """The features of a NeMo mel preprocessor, its fixed input map (if any) included."""
        return cls(preprocessor.featurizer, getattr(preprocessor, "normalize_features", None))

    def new_state(self, device: torch.device | str = "cpu") -> FeatureStreamState:
        return FeatureStreamState(buffer=torch.zeros(self.geometry.pad_samples, device=device))

    def num_frames(self, num_samples: int) -> int:
        """Mel frames NeMo's preprocessor reports (``seq_len``) for a signal of ``num_samples``."""
        return int(self.featurizer.get_seq_len(torch.tensor(num_samples)).item())

    def frames_ready(self, num_samples: int) -> int:
        """Mel frames that are final once ``num_samples`` raw samples have arrived (more may follow)."""
        g = self.geometry
        complete = (num_samples + g.pad_samples - g.win_offset - g.win_length) // g.hop_samples + 1
        return max(0, min(complete, self.num_frames(num_samples)))

    def push(self, state: FeatureStreamState, samples: torch.Tensor) -> torch.Tensor:
        """Append raw mono float32 samples (n,); return the mel frames now final, (num_mels, frames)."""
        if state.finished:
            raise RuntimeError("push() after finish(): start a new stream state")
        if samples.numel():
            self._append(state, samples)
        return self._emit(state, self.frames_ready(state.num_samples))

    def finish(self, state: FeatureStreamState) -> torch.Tensor:
        """End of stream: the remaining frames with NeMo's zero padding at the end, (num_mels, frames)."""
        frames = self._emit(state, self.num_frames(state.num_samples))
        state.finished = True
        return frames

    def _append(self, state: FeatureStreamState, samples: torch.Tensor) -> None:
        samples = samples.to(device=state.buffer.device, dtype=torch.float32)
        preemph = self.featurizer.preemph
        if preemph is not None:
            if state.last_sample is None:  # NeMo keeps the first sample of the signal as it is
                previous = torch.cat([samples.new_zeros(1), samples[:-1]])
                emphasised = samples - preemph * previous
                emphasised[0] = samples[0]
            else:
                previous = torch.cat([state.last_sample, samples[:-1]])
                emphasised = samples - preemph * previous
            state.last_sample = samples[-1:].clone()
            samples = emphasised
        state.buffer = torch.cat([state.buffer, samples])
        state.num_samples += samples.numel()

    def _emit(self, state: FeatureStreamState, end_frame: int) -> torch.Tensor:
        g = self.geometry
        first = state.next_frame
        if end_frame <= first:
            return state.buffer.new_zeros(self.num_mels, 0)
        start = first * g.hop_samples - state.buffer_start
        stop = (end_frame - 1) * g.hop_samples + g.n_fft - state.buffer_start
        segment = state.buffer[start:stop]
        if segment.numel() < stop - start:
            # Samples beyond what arrived lie under the zero part of the window (or past the end of the
            # signal, where NeMo's STFT pads zeros too): zeros give the same numbers.
            segment = torch.nn.functional.pad(segment, (0, stop - start - segment.numel()))
        mels = self._log_mel(segment)
        state.next_frame = end_frame
        drop = end_frame * g.hop_samples - state.buffer_start
        state.buffer = state.buffer[drop:]
        state.buffer_start += drop
        return mels

    def _log_mel(self, segment: torch.Tensor) -> torch.Tensor:
        """Same operations as ``FilterbankFeatures.forward`` after preemphasis, on whole frames."""
        fz = self.featurizer
        spec = torch.stft(
            segment,
            n_fft=fz.n_fft,
            hop_length=fz.hop_length,
            win_length=fz.win_length,
            center=False,
            window=fz.window.to(dtype=torch.float, device=segment.device),
            return_complex=True,
        )
        x = torch.view_as_real(spec)
        x = torch.sqrt(x.pow(2).sum(-1))
        if fz.mag_power != 1.0:
            x = x.pow(fz.mag_power)
        x = torch.matmul(fz.fb.to(x.dtype), x.unsqueeze(0))
        if fz.log:
            guard = fz.log_zero_guard_value_fn(x)
            if fz.log_zero_guard_type == "add":
                x = torch.log(x + guard)
            else:
                x = torch.log(torch.clamp(x, min=guard))
        if fz.normalize:  # only frame-local kinds get here (NA, fixed mean/std): see compat.py
            x, _, _ = normalize_batch(x, torch.tensor([x.size(-1)]), normalize_type=fz.normalize)
        if self.feature_map is not None:  # the same code as the preprocessor's offline forward: same numbers
            x = self.feature_map(x)
        return x[0]
