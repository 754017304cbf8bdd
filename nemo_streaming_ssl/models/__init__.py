"""NeMo models for streaming NEST (imports NeMo)."""

from .config_checks import StreamingConfigError, check_streaming_config
from .streaming_nest import StreamingNESTModel

__all__ = ["StreamingConfigError", "StreamingNESTModel", "check_streaming_config"]
