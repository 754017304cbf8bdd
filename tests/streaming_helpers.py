"""Shared pieces of the streaming tests: tiny model configs, speech, and feeding audio in pieces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from nemo_streaming_ssl.core.protocol import feed_in_pieces
from nemo_streaming_ssl.data.manifest import read_manifest
from nemo_streaming_ssl.streaming.runner import TokenStreamOutput

# Tiny streaming NEST models (preset=tiny: d_model 64, 2 layers); left contexts small enough that a few
# seconds of audio exceed them.
MODES = {
    "causal": ["preset=tiny", "mode=causal"],
    "lookahead": ["preset=tiny", "mode=lookahead"],
    "left_context": ["preset=tiny", "mode=left_context", "model.encoder.att_context_size=[16,0]"],
    "left_context_lookahead": ["preset=tiny", "mode=left_context", "model.encoder.att_context_size=[8,1]"],
}



def speech(corpus: dict[str, Path], count: int, seconds: float = 3.0) -> list[torch.Tensor]:
    """The ``count`` utterances of the test corpus closest to ``seconds`` long, float32 (samples,)."""
    entries = sorted(read_manifest(corpus["train"]), key=lambda e: abs(e.duration - seconds))[:count]
    return [torch.from_numpy(sf.read(e.audio_filepath, dtype="float32")[0]) for e in entries]


def stream(runner, audio: torch.Tensor, piece_samples: int):
    """Feed ``audio`` in pieces of ``piece_samples`` then flush; return frames (T, D), log-probs, outputs."""
    state = runner.new_state(1, sample_rate=16000)
    outputs = [call[0] for call in feed_in_pieces(runner, state, audio, piece_samples)]
    joined = TokenStreamOutput.join(outputs)
    return joined.frames, joined.log_probs, outputs


def noise_audio(seconds: float, seed: int = 0) -> torch.Tensor:
    """Random audio at 16 kHz (a cheap stand-in for long streams)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(0.1 * rng.standard_normal(int(seconds * 16000)).astype(np.float32))
