"""Does self-supervised pretraining help? Frozen-feature probes on a locally built keyword task."""

from .features import layer_features, load_audio
from .keywords import KEYWORDS, Clip, KeywordTaskError, build_keyword_task, read_clips
from .probe import ProbeSettings, probe_accuracy

__all__ = [
    "KEYWORDS",
    "Clip",
    "KeywordTaskError",
    "ProbeSettings",
    "build_keyword_task",
    "layer_features",
    "load_audio",
    "probe_accuracy",
    "read_clips",
]
