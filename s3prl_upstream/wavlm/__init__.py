"""Streaming WavLM in pure torch (no NeMo, no s3prl at import time).

Public API::

    from s3prl_upstream.wavlm import (StreamingWavLMConfig, StreamingWavLM, StreamingState,
                                      load_streaming_wavlm, convert_wavlm_checkpoint,
                                      CheckpointError, ModelConfigError)
"""

from .checkpoint import CheckpointError, convert_wavlm_checkpoint, load_streaming_wavlm
from .config import ModelConfigError, StreamingWavLMConfig
from .model import StreamingState, StreamingWavLM

__all__ = [
    "CheckpointError",
    "ModelConfigError",
    "StreamingState",
    "StreamingWavLM",
    "StreamingWavLMConfig",
    "convert_wavlm_checkpoint",
    "load_streaming_wavlm",
]
