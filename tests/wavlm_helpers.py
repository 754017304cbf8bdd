"""Shared pieces of the streaming WavLM tests: a tiny config, a randomised model, a streaming driver, and
pickled objects for the checkpoint-loading tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from nemo_streaming_ssl.core.exactness import difference
from nemo_streaming_ssl.core.fast_linear import use_fast_cpu_linears
from nemo_streaming_ssl.core.protocol import feed_in_pieces, join
from s3prl_upstream.wavlm import StreamingWavLM, StreamingWavLMConfig

# Tiny but complete: real front end (hop 320), 2 layers, a 16-frame window so the KV cache evicts within a
# second of audio, and few buckets so the log-spaced bucket range is exercised inside the window.
TINY = dict(hidden_dims=[32] * 7, num_layers=2, dim=64, ffn_dim=96, num_heads=4, num_buckets=32, max_distance=40,
            conv_pos=16, conv_pos_groups=4, window_size=16, lookahead_size=3)


class RunsCodeWhenUnpickled:
    """Unpickling it calls os.mkdir(marker): the visible trace of code that a checkpoint file can run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@dataclass
class TrainingNote:
    """A harmless pickled object that torch's weights-only loader does not know (as old training scripts saved)."""

    text: str


def tiny_config(**changes) -> StreamingWavLMConfig:
    return StreamingWavLMConfig(**{**TINY, **changes})


def tiny_model(seed: int = 0, **changes) -> StreamingWavLM:
    """Every parameter random (LayerNorms and gates included), so a wrong term cannot hide behind an init.
    An inference model as ``load_streaming_wavlm`` makes one (eval mode, few-row CPU linears), its small
    weights taking the oneDNN path that only the full-size model's large ones take."""
    torch.manual_seed(seed)
    model = StreamingWavLM(tiny_config(**changes))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.endswith("norm.weight") else 0.3 * torch.randn_like(p))
    use_fast_cpu_linears(model, prepack_min_elements=0)
    return model.eval()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return difference(a, b).relative


def stream_all(model: StreamingWavLM, wav: torch.Tensor, pieces) -> tuple[list[torch.Tensor], int]:
    """Feed wav [B, S] in pieces of the given sizes (cycled), then flush. Returns (per layer [B, T, D], max KV frames)."""
    state = model.new_state(wav.shape[0], sample_rate=16000)
    calls, max_cache = [], 0
    for outputs in feed_in_pieces(model, state, wav, pieces):
        calls.append(outputs)
        max_cache = max(max_cache, state.kv_cache_frames)
    hidden = torch.stack([out.hidden_states for out in join(calls)], dim=1)  # [L, B, T, D]
    return list(hidden.unbind(0)), max_cache
