"""Check one piece of streamed audio: mono float samples, finite. Refuse anything else by name."""

from __future__ import annotations

import numpy as np
import torch


class AudioInputError(ValueError):
    """A piece of audio the runner will not guess about; the message says what to pass instead."""


def check_sample_rate(sample_rate: int, expected: int) -> None:
    if int(sample_rate) != int(expected):
        raise AudioInputError(
            f"audio at {sample_rate} Hz, the model expects {expected} Hz: resample first "
            f"(e.g. `sox in.wav -r {expected} out.wav`, or torchaudio.functional.resample)"
        )


def as_mono_float(piece, stream: int, offset: int) -> torch.Tensor:
    """``piece`` (samples,) as float32; ``offset`` = samples of this stream before it (for messages).

    None and empty pieces are allowed (nothing arrived). Integer PCM is refused rather than scaled:
    its full scale (int16 vs int32 vs already-float values stored as ints) is a guess.
    """
    where = f"stream {stream}"
    if piece is None:
        return torch.zeros(0)
    if isinstance(piece, np.ndarray):
        piece = torch.from_numpy(np.ascontiguousarray(piece))
    if not isinstance(piece, torch.Tensor):
        raise AudioInputError(f"{where}: expected a torch.Tensor or numpy array of samples, got {type(piece).__name__}")
    if piece.is_complex() or not piece.is_floating_point():
        raise AudioInputError(
            f"{where}: samples of dtype {piece.dtype}; pass float samples in [-1, 1], e.g. int16 PCM / 32768 "
            f"(soundfile.read(path, dtype='float32') returns them)"
        )
    if piece.dim() != 1:
        if piece.dim() == 2 and min(piece.shape) > 1:
            raise AudioInputError(
                f"{where}: {min(piece.shape)}-channel audio of shape {tuple(piece.shape)}; the model takes mono: "
                f"pass one channel (x[:, 0]) or the mean over channels"
            )
        raise AudioInputError(f"{where}: expected a 1-D tensor of samples, got shape {tuple(piece.shape)}")
    piece = piece.to(torch.float32)
    bad = ~torch.isfinite(piece)
    if bad.any():
        first = int(bad.nonzero()[0, 0])
        raise AudioInputError(
            f"{where}: non-finite sample ({piece[first].item()}) at index {first} of this piece "
            f"(sample {offset + first} of the stream); the stream state is unchanged, fix the audio and feed again"
        )
    return piece
