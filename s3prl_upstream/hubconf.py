"""s3prl hub entries of the streaming WavLM and of streaming NEST encoders: per model one factory, one entry
per streaming chunk size.

Each entry only builds (load the checkpoint, pick the chunk size); :class:`StreamingWavLMExpert` and
:class:`~s3prl_upstream.nest_expert.StreamingNESTExpert` adapt the model to s3prl. The NEST entries import
NeMo when they are called, never before: ``import s3prl.hub`` and the WavLM entries stay NeMo-free.

Streaming WavLM: Features are chunk-exact, so every entry gives the same features (within 1e-4); entries
differ in latency and compute only. ``run_downstream.py -u <entry> -k ckpt.pt [-g model.yaml]`` calls
``entry(ckpt=..., model_config=..., refresh=...)``. Checkpoints are read weights-only: a file that also
holds pickled Python objects needs ``trust_pickle=True`` or ``STREAMING_SSL_TRUST_PICKLED_CHECKPOINTS=1``
(the only way from run_downstream.py).

Streaming NEST: ``run_downstream.py -u streaming_nest_400ms -k ssl.nemo`` calls ``entry(ckpt=..., model_config=None,
refresh=...)``; ``-k`` is a ``.nemo`` of our pretraining (any mode) or a NeMo CTC model fine-tuned from one.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

from nemo_streaming_ssl.core.fast_linear import use_fast_cpu_linears
from s3prl_upstream.expert import SAMPLE_RATE, StreamingWavLMExpert
from s3prl_upstream.wavlm import CheckpointError, StreamingWavLM, StreamingWavLMConfig, load_streaming_wavlm
from s3prl_upstream.wavlm.config import resolve_model_config

if TYPE_CHECKING:
    from s3prl_upstream.nest_expert import StreamingNESTExpert

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
            use_fast_cpu_linears(model)
        elif ckpt is None:
            raise CheckpointError(
                f"{name} needs a streaming WavLM checkpoint: run_downstream.py -u {name} -k /path/to/ckpt.pt "
                f"(add -g model.yaml when the checkpoint carries no model_config), or {name}(ckpt='/path/to/ckpt.pt') "
                "in Python. Random weights only on explicit request: random_init=True (benchmarks).")
        else:
            model = load_streaming_wavlm(ckpt, model_config=model_config, trust_pickle=trust_pickle)
        return StreamingWavLMExpert(model, chunk_samples=round(chunk_ms * SAMPLE_RATE / 1000))

    entry.__name__ = entry.__qualname__ = name
    entry.default_chunk_ms = default_chunk_ms
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

WAVLM_ENTRIES = {
    entry.__name__: entry
    for entry in (streaming_wavlm, streaming_wavlm_200ms, streaming_wavlm_400ms, streaming_wavlm_600ms,
                  streaming_wavlm_800ms, streaming_wavlm_1000ms, streaming_wavlm_offline)
}

# NEST entries: chunk in ms; None = the model's own attention chunk (lookahead + 1 frames), OFFLINE = the
# fewest whole attention chunks lasting at least OFFLINE_CHUNK_MS.
NEST_OWN_CHUNK, NEST_OFFLINE = None, "offline"
NEST_CHUNKS_MS = {"streaming_nest": NEST_OWN_CHUNK, "streaming_nest_80ms": 80, "streaming_nest_160ms": 160,
                  "streaming_nest_400ms": 400, "streaming_nest_800ms": 800, "streaming_nest_offline": NEST_OFFLINE}


def nest_chunk_argument(chunk_ms: float | str | None) -> dict:
    """The runner's chunk argument for a NEST entry's chunk (NEST_CHUNKS_MS values, or a chunk_ms override)."""
    return {"min_chunk_ms": OFFLINE_CHUNK_MS} if chunk_ms == NEST_OFFLINE else {"chunk_ms": chunk_ms}


def _load_nest_runner(name: str, path: str, chunk: dict):
    """Restores the .nemo at ``path`` and builds its streaming runner with per-layer outputs; every refusal
    names the entry and the -k file. ``chunk``: the runner's chunk_ms= or min_chunk_ms= argument."""
    from nemo.core import ModelPT

    from nemo_streaming_ssl.streaming import NotStreamableError, StreamingEncoderRunner  # NeMo allows our targets

    where = f"{name}: -k {path}"
    if not Path(path).is_file():
        raise CheckpointError(f"{where}: no such file; pass the .nemo written by NEST pretraining or CTC fine-tuning")
    if not tarfile.is_tarfile(path):
        raise CheckpointError(f"{where} is not a .nemo (NeMo's tar archive); the {name} entries take a .nemo of "
                              "streaming NEST pretraining or CTC fine-tuning (a streaming WavLM .pt goes with "
                              "the streaming_wavlm entries)")
    try:
        model = ModelPT.restore_from(path, map_location="cpu")
    except Exception as error:  # noqa: BLE001 - NeMo raises many kinds; the message names the file
        raise CheckpointError(f"{where}: NeMo could not restore it: {type(error).__name__}: {error}") from error
    try:
        return StreamingEncoderRunner(model, copy_model=False, hidden_states=True, **chunk)
    except NotStreamableError as error:
        raise NotStreamableError(f"{where}: {error}") from error
    except ValueError as error:  # a chunk size this model's attention context cannot stream
        own = StreamingEncoderRunner(model, copy_model=False)  # one attention chunk: the smallest that fits
        own_ms = own.chunk_frames * own.frame_ms
        fitting = [entry for entry, ms in NEST_CHUNKS_MS.items()
                   if not isinstance(ms, int) or abs(ms / own_ms - round(ms / own_ms)) < 1e-6]
        raise ValueError(f"{where}: this model cannot stream that chunk size ({error}). Entries that fit it: "
                         f"{', '.join(fitting)}") from error


def _make_nest_entry(name: str, default_chunk_ms: float | str | None):
    """The one NEST factory: an s3prl hub callable that streams a .nemo in ``default_chunk_ms`` chunks."""

    def entry(ckpt=None, model_config=None, refresh=False, *, chunk_ms: float | None = None,
              **kwargs) -> StreamingNESTExpert:
        if kwargs:
            raise TypeError(f"{name}() got unexpected argument(s) {sorted(kwargs)}; it accepts ckpt, model_config "
                            "(must be None), refresh (ignored: nothing is downloaded), chunk_ms")
        if ckpt is None:
            raise CheckpointError(
                f"{name} needs a streaming NEST .nemo: run_downstream.py -u {name} -k /path/to/ssl.nemo (from NEST "
                f"pretraining, any mode, or a CTC model fine-tuned from one), or {name}(ckpt='/path/to/ssl.nemo') "
                "in Python. There are no default weights.")
        if not isinstance(ckpt, (str, Path)):
            raise TypeError(f"{name}: ckpt must be the path of a .nemo, got {type(ckpt).__name__}")
        if model_config is not None:
            raise ValueError(f"{name}: a .nemo carries its own config; drop -g {model_config} (model_config)")
        if chunk_ms is not None and (isinstance(chunk_ms, bool) or not isinstance(chunk_ms, (int, float))
                                     or chunk_ms <= 0):
            raise ValueError(f"{name}: chunk_ms must be a positive number of ms, got {chunk_ms!r}")
        chunk = nest_chunk_argument(default_chunk_ms if chunk_ms is None else chunk_ms)
        from s3prl_upstream.nest_expert import StreamingNESTExpert

        return StreamingNESTExpert(_load_nest_runner(name, str(ckpt), chunk)).eval()

    own = default_chunk_ms is NEST_OWN_CHUNK
    chunk_words = ("the model's own attention chunk (lookahead + 1 frames of 80 ms)" if own else
                   f"the fewest whole attention chunks lasting >= {OFFLINE_CHUNK_MS / 1000:g} s (offline)"
                   if default_chunk_ms == NEST_OFFLINE else f"{default_chunk_ms:g} ms chunks")
    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"Streaming NEST upstream (a .nemo) fed in {chunk_words}.\n\n"
        "    ckpt: path of a .nemo of streaming NEST pretraining or of a CTC model fine-tuned from one;\n"
        "    model_config: must be None (the .nemo carries its config); refresh: ignored (nothing is downloaded);\n"
        "    chunk_ms: override the chunk size (a whole number of the model's attention chunks).")
    return entry


NEST_ENTRIES = {name: _make_nest_entry(name, chunk_ms) for name, chunk_ms in NEST_CHUNKS_MS.items()}
(streaming_nest, streaming_nest_80ms, streaming_nest_160ms, streaming_nest_400ms, streaming_nest_800ms,
 streaming_nest_offline) = NEST_ENTRIES.values()
ENTRIES = {**WAVLM_ENTRIES, **NEST_ENTRIES}
