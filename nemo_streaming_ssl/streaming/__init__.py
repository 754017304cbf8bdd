"""Streaming inference for pretrained streaming NEST encoders (imports NeMo).

    runner = StreamingEncoderRunner.from_nemo("ssl.nemo", chunk_ms=400)
    state = runner.new_state(batch_size=1, sample_rate=16000)
    for piece in pieces:                       # any sizes, as the audio arrives
        out = runner.feed(state, piece)[0]     # out.frames: (T, D) encoder frames now final
    out = runner.flush(state)[0]               # the rest, as the offline forward gives them

``latency`` (algorithmic latency arithmetic) does not import NeMo.
"""

from .audio_input import AudioInputError
from .compat import NotStreamableError, StreamingSpec, streaming_spec
from .features import StreamingLogMel
from .latency import LatencyReport, WindowGeometry, algorithmic_latency
from .runner import StreamingEncoderRunner, StreamOutput
from .state import StreamingState

__all__ = [
    "AudioInputError",
    "LatencyReport",
    "NotStreamableError",
    "StreamOutput",
    "StreamingEncoderRunner",
    "StreamingLogMel",
    "StreamingSpec",
    "StreamingState",
    "WindowGeometry",
    "algorithmic_latency",
    "streaming_spec",
]
