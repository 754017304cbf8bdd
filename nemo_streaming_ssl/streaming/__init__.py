"""Streaming inference for pretrained streaming NEST encoders.

    runner = StreamingEncoderRunner.from_nemo("ssl.nemo", chunk_ms=400)
    state = runner.new_state(batch_size=1, sample_rate=16000)
    for piece in pieces:                       # any sizes, as the audio arrives
        out = runner.feed(state, piece)[0]     # out.frames: (T, D) encoder frames now final
    out = runner.flush(state)[0]               # the rest, as the offline forward gives them

Names are imported on first use: ``nemo_streaming_ssl.streaming.latency`` (the latency arithmetic)
works without importing NeMo.
"""

from importlib import import_module

_EXPORTS = {
    "AudioInputError": ".audio_input",
    "LatencyReport": "..core.latency",
    "WindowGeometry": ".latency",
    "algorithmic_latency": ".latency",
    "NotStreamableError": ".compat",
    "StreamingSpec": ".compat",
    "streaming_spec": ".compat",
    "StreamingLogMel": ".features",
    "StreamingEncoderRunner": ".runner",
    "StreamOutput": "..core.protocol",
    "TokenStreamOutput": ".runner",
    "StreamingState": ".state",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
