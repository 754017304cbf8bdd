"""Fixed per-mel-bin normalization of the encoder input: corpus statistics, so every frame depends on itself only.

Per-utterance normalization (NeMo's ``normalize: per_feature``) needs the whole utterance and cannot stream.
A constant affine map per mel bin, ``(log_mel - fixed_mean) / fixed_std``, streams exactly. NeMo's own
``normalize: {fixed_mean, fixed_std}`` means the same thing but fails for batches of more than one utterance
(NeMo 2.5.3 ``normalize_batch`` views the mean as (batch, features)), hence this preprocessor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from nemo.collections.asr.modules import AudioToMelSpectrogramPreprocessor

from ..data.manifest import audio_path, manifest_items


def check_fixed_stats(fixed_mean, fixed_std, num_features: int, where: str = "model.preprocessor") -> tuple[list[float], list[float]]:
    """Validated (mean, std) lists of ``num_features`` finite floats, std > 0; ValueError naming the key otherwise."""
    values = {}
    for key, given in (("fixed_mean", fixed_mean), ("fixed_std", fixed_std)):
        if given is None or isinstance(given, (str, bytes)) or not hasattr(given, "__len__"):
            raise ValueError(f"{where}.{key}: expected a list of {num_features} floats (one per mel bin), got {given!r}")
        numbers = [float(v) for v in given]
        if len(numbers) != num_features:
            raise ValueError(
                f"{where}.{key}: {len(numbers)} values, but the preprocessor makes {num_features} mel bins "
                f"({where}.features); give one value per bin"
            )
        if not all(math.isfinite(v) for v in numbers):
            raise ValueError(f"{where}.{key}: every value must be finite")
        values[key] = numbers
    bad = [i for i, v in enumerate(values["fixed_std"]) if v <= 0.0]
    if bad:
        raise ValueError(f"{where}.fixed_std: must be > 0 in every mel bin; bins {bad[:8]} are not")
    return values["fixed_mean"], values["fixed_std"]


class FixedNormMelSpectrogramPreprocessor(AudioToMelSpectrogramPreprocessor):
    """NeMo's log-mel preprocessor followed by ``(x - fixed_mean) / fixed_std`` per mel bin (padding keeps ``pad_value``).

    Args:
        fixed_mean, fixed_std: one float per mel bin (``features``); std > 0. Every other argument is
            ``AudioToMelSpectrogramPreprocessor``'s; ``normalize`` must be ``NA`` (one normalization only).
    """

    def __init__(self, fixed_mean: Sequence[float], fixed_std: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        if self.featurizer.normalize not in (None, "NA"):
            raise ValueError(
                f"model.preprocessor.normalize: {self.featurizer.normalize!r} and fixed_mean/fixed_std both normalize; "
                "set model.preprocessor.normalize=NA"
            )
        mean, std = check_fixed_stats(fixed_mean, fixed_std, self.featurizer.nfilt)
        # Not in the state dict: the config holds the numbers (one source, saved in the .nemo).
        self.register_buffer("fixed_mean", torch.tensor(mean).unsqueeze(-1), persistent=False)
        self.register_buffer("fixed_std", torch.tensor(std).unsqueeze(-1), persistent=False)

    def normalize_features(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D, T) log-mels -> the encoder's input; frame-local, so the streaming runner applies it too."""
        return (x - self.fixed_mean) / self.fixed_std

    def get_features(self, input_signal, length):
        x, seq_len = super().get_features(input_signal, length)
        padding = torch.arange(x.shape[-1], device=x.device) >= seq_len.unsqueeze(1)
        return self.normalize_features(x).masked_fill(padding.unsqueeze(1), self.featurizer.pad_value), seq_len

    @torch.no_grad()
    def log_mel(self, input_signal: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The log-mels before the fixed map (NEST's quantizer targets use these, with their own normalization)."""
        x, seq_len = super().get_features(input_signal.to(torch.float32), length)
        return x.to(self.dtype_sentinel_tensor.dtype), seq_len


def _manifest_entries(paths: Sequence[str]) -> list[dict]:
    """Every line of the manifests (checked as pretraining checks them), audio paths made absolute."""
    return [{**item, "audio_filepath": str(audio_path(path, item["audio_filepath"]))}
            for path in paths for _, _, item in manifest_items(path)]


@torch.no_grad()
def estimate_fixed_stats(
    preprocessor: AudioToMelSpectrogramPreprocessor, manifest_paths: Sequence[str], max_utterances: int
) -> tuple[list[float], list[float]]:
    """Per-mel-bin mean and std of ``preprocessor``'s log-mels over up to ``max_utterances`` manifest utterances.

    The utterances are spread evenly over the manifest(s) (deterministic, no random state used), the features
    computed in eval mode (no dither); every valid frame of every utterance counts once.
    """
    import soundfile as sf

    entries = _manifest_entries(manifest_paths)
    if not entries:
        raise ValueError(f"model.train_ds.manifest_filepath: {list(manifest_paths)} has no utterances to estimate the input statistics")
    count = min(max_utterances, len(entries))
    picked = [entries[(i * len(entries)) // count] for i in range(count)]  # evenly spread: manifests are often sorted
    was_training = preprocessor.training
    preprocessor.eval()
    total = torch.zeros(preprocessor.featurizer.nfilt, dtype=torch.float64)
    squares = torch.zeros_like(total)
    frames = 0
    try:
        for entry in picked:
            path = Path(entry["audio_filepath"])
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} (from model.train_ds.manifest_filepath) is not a file: the input statistics are estimated "
                    "from plain manifests; for tarred or remote data give model.preprocessor.fixed_mean/fixed_std"
                )
            info = sf.info(str(path))
            if info.samplerate != preprocessor._sample_rate:
                raise ValueError(f"{path}: {info.samplerate} Hz, the preprocessor expects {preprocessor._sample_rate} Hz")
            start = int(round(float(entry.get("offset") or 0.0) * info.samplerate))
            duration = entry.get("duration")
            stop = start + int(round(float(duration) * info.samplerate)) if duration is not None else None
            audio, _ = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
            signal = torch.from_numpy(audio.mean(axis=1)).unsqueeze(0)
            feats, feat_len = preprocessor(input_signal=signal, length=torch.tensor([signal.shape[1]]))
            x = feats[0, :, : int(feat_len[0])].to(torch.float64)
            total += x.sum(dim=1)
            squares += (x * x).sum(dim=1)
            frames += x.shape[1]
    finally:
        preprocessor.train(was_training)
    mean = total / frames
    std = (squares / frames - mean * mean).clamp(min=0.0).sqrt()
    return mean.tolist(), std.tolist()
