"""Frozen utterance-level features of every encoder layer: time-mean and time-std of the hidden states.

The encoder runs its ordinary offline forward in eval mode (for our streaming models this equals streaming
exactly, and is cheaper). Layer 0 is the subsampled pre-encode output (80 ms frames, before positional
scaling), layer i >= 1 the output of Conformer layer i.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import soundfile as sf
import torch
from torch import nn


def load_audio(paths: Sequence[str], sample_rate: int) -> list[np.ndarray]:
    """WAV paths -> float32 mono arrays; refuses another sample rate, naming the file."""
    clips = []
    for path in paths:
        audio, rate = sf.read(str(path), dtype="float32")
        if rate != sample_rate:
            raise ValueError(f"{path}: {rate} Hz, the model expects {sample_rate} Hz; resample it")
        clips.append(audio if audio.ndim == 1 else audio.mean(axis=1))
    return clips


def _pool(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, D) hidden states, (B,) valid frames -> (B, 2D) mean and std over the valid frames."""
    valid = (torch.arange(hidden.shape[1], device=hidden.device) < lengths.unsqueeze(1)).unsqueeze(-1).to(hidden.dtype)
    count = valid.sum(dim=1).clamp(min=1.0)
    mean = (hidden * valid).sum(dim=1) / count
    var = (((hidden - mean.unsqueeze(1)) ** 2) * valid).sum(dim=1) / count
    return torch.cat([mean, var.clamp(min=0.0).sqrt()], dim=-1)


@torch.no_grad()
def layer_features(model: nn.Module, clips: Sequence[np.ndarray], batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """Pooled hidden states of every layer for each clip.

    Args:
        model: a NeMo ASR model with ``preprocessor`` and a ConformerEncoder ``encoder`` (ours or NeMo's offline).
        clips: N mono float32 arrays at the model's sample rate.
    Returns:
        (L+1, N, 2*d_model) float32: layer 0 = pre-encode output, layer i = Conformer layer i; mean then std.
    """
    from tqdm import tqdm

    model.eval()
    encoder = model.encoder
    captured: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    hooks = [encoder.pre_encode.register_forward_hook(keep)]
    hooks += [layer.register_forward_hook(keep) for layer in encoder.layers]
    order = np.argsort([len(c) for c in clips])  # similar lengths per batch: less padding
    pooled: list[list[torch.Tensor]] = [[] for _ in range(len(hooks))]
    try:
        for start in tqdm(range(0, len(clips), batch_size), desc="features", disable=not progress, leave=False):
            batch = [clips[i] for i in order[start : start + batch_size]]
            lengths = torch.tensor([len(c) for c in batch])
            audio = torch.zeros(len(batch), int(lengths.max()))
            for row, clip in enumerate(batch):
                audio[row, : len(clip)] = torch.from_numpy(clip)
            captured.clear()
            feats, feat_len = model.preprocessor(input_signal=audio, length=lengths)
            _, enc_len = encoder(audio_signal=feats, length=feat_len)
            if len(captured) != len(hooks):
                raise RuntimeError(f"expected {len(hooks)} hidden states from the encoder, got {len(captured)}")
            for layer, hidden in enumerate(captured):
                pooled[layer].append(_pool(hidden[:, : int(enc_len.max())], enc_len))
    finally:
        for hook in hooks:
            hook.remove()
    inverse = np.argsort(order)
    return np.stack([torch.cat(p).numpy()[inverse] for p in pooled]).astype(np.float32)
