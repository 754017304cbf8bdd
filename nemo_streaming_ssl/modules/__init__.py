"""NeMo modules for streaming NEST, each built from ``_target_`` in the model config (imports NeMo)."""

from nemo.core.classes import common as _nemo_common

from .encoder import MultiLatencyConformerEncoder
from .input_norm import FixedNormMelSpectrogramPreprocessor
from .loss import MaskedTokenPredLoss
from .masking import CausalBlockMasking

# NeMo builds `_target_` classes only from an allow-list of module prefixes (and only nn.Module or ModelPT
# subclasses); add ours so configs can name these modules. NeMo 3.0 also checks a .nemo's model class
# against it, so whatever restores one of our .nemo files imports this module first.
if "nemo_streaming_ssl." not in _nemo_common.ALLOWED_TARGET_PREFIXES:
    _nemo_common.ALLOWED_TARGET_PREFIXES.append("nemo_streaming_ssl.")

__all__ = [
    "CausalBlockMasking",
    "FixedNormMelSpectrogramPreprocessor",
    "MaskedTokenPredLoss",
    "MultiLatencyConformerEncoder",
]
