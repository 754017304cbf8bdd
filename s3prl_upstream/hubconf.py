"""s3prl hub entries of the streaming WavLM: one factory, one entry per streaming chunk size.

Each entry only builds (load the checkpoint, pick the chunk size); :class:`StreamingWavLMExpert` adapts the
model to s3prl. Features are chunk-exact, so every entry gives the same features (within 1e-4); entries
differ in latency and compute only. ``run_downstream.py -u <entry> -k ckpt.pt [-g model.yaml]`` calls
``entry(ckpt=..., model_config=..., refresh=...)``. Checkpoints are read weights-only: a file that also
holds pickled Python objects needs ``trust_pickle=True`` or ``STREAMING_SSL_TRUST_PICKLED_CHECKPOINTS=1``
(the only way from run_downstream.py).
"""

from __future__ import annotations

from s3prl_upstream.expert import SAMPLE_RATE, StreamingWavLMExpert
from s3prl_upstream.wavlm import CheckpointError, StreamingWavLM, StreamingWavLMConfig, load_streaming_wavlm
from s3prl_upstream.wavlm.config import resolve_model_config

OFFLINE_CHUNK_MS = 10_000


def _make_entry(name: str, default_chunk_ms: float):
    """The one factory: an s3prl hub callable that streams in ``default_chunk_ms`` chunks."""

    def entry(ckpt=None, model_config=None, refresh=False, *, chunk_ms: float | None = None,
              random_init: bool = False, trust_pickle: bool = False, **kwargs) -> StreamingWavLMExpert:
        if kwargs:
            raise TypeError(f"{name}() got unexpected argument(s) {sorted(kwargs)}; it accepts ckpt, model_config, "
                            "refresh (ignored: nothing is downloaded), chunk_ms, random_init, trust_pickle")
        chunk_ms = default_chunk_ms if chunk_ms is None else chunk_ms
        if isinstance(chunk_ms, bool) or not isinstance(chunk_ms, (int, float)) or chunk_ms * SAMPLE_RATE < 1000:
            raise ValueError(f"{name}: chunk_ms must be a number >= {1000 / SAMPLE_RATE} (one sample), got {chunk_ms!r}")
        if random_init:
            if ckpt is not None:
                raise ValueError(f"{name}: got both ckpt={ckpt!r} and random_init=True; pick one")
            model = StreamingWavLM(resolve_model_config(model_config) or StreamingWavLMConfig()).eval()
        elif ckpt is None:
            raise CheckpointError(
                f"{name} needs a streaming WavLM checkpoint: run_downstream.py -u {name} -k /path/to/ckpt.pt "
                f"(add -g model.yaml when the checkpoint carries no model_config), or {name}(ckpt='/path/to/ckpt.pt') "
                "in Python. Random weights only on explicit request: random_init=True (benchmarks).")
        else:
            model = load_streaming_wavlm(ckpt, model_config=model_config, trust_pickle=trust_pickle)
        return StreamingWavLMExpert(model, chunk_samples=round(chunk_ms * SAMPLE_RATE / 1000))

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"Streaming WavLM upstream fed in {default_chunk_ms:g} ms chunks "
        f"({'offline: one chunk per 10 s' if default_chunk_ms == OFFLINE_CHUNK_MS else 'streaming'}).\n\n"
        "    ckpt: checkpoint path (or loaded dict); model_config: -g YAML path / dict, needed only when the\n"
        "    checkpoint has no embedded model_config; refresh: ignored (nothing is downloaded);\n"
        "    chunk_ms: override the chunk size; random_init=True: random weights, for benchmarks only;\n"
        "    trust_pickle=True: also load a checkpoint that holds pickled Python objects (which can run code:\n"
        "    only for files you trust).")
    return entry


streaming_wavlm = _make_entry("streaming_wavlm", 400)
streaming_wavlm_200ms = _make_entry("streaming_wavlm_200ms", 200)
streaming_wavlm_400ms = _make_entry("streaming_wavlm_400ms", 400)
streaming_wavlm_600ms = _make_entry("streaming_wavlm_600ms", 600)
streaming_wavlm_800ms = _make_entry("streaming_wavlm_800ms", 800)
streaming_wavlm_1000ms = _make_entry("streaming_wavlm_1000ms", 1000)
streaming_wavlm_offline = _make_entry("streaming_wavlm_offline", OFFLINE_CHUNK_MS)

ENTRIES = {
    entry.__name__: entry
    for entry in (streaming_wavlm, streaming_wavlm_200ms, streaming_wavlm_400ms, streaming_wavlm_600ms,
                  streaming_wavlm_800ms, streaming_wavlm_1000ms, streaming_wavlm_offline)
}
