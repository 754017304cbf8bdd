"""Is a restored NeMo model exactly streamable? Read its modules, refuse with the key and the fix.

A model streams exactly (chunked output == offline forward of the same model) when every part of
it sees only the past plus a bounded, chunk-aligned lookahead:

* features: NeMo's ``FilterbankFeatures`` without whole-utterance normalisation;
* subsampling: causal striding convolutions (``causal_downsampling: true``);
* attention: ``rel_pos`` with limited right context, ``chunked_limited`` (or ``regular`` with right 0);
* convolution module: causal (``conv_context_size: causal``) with a per-frame norm. LayerNorm is per
  frame; BatchNorm in eval mode is a fixed per-channel affine map, so it streams exactly too.
  InstanceNorm/GroupNorm pool over time and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from nemo.collections.asr.modules import AudioToMelSpectrogramPreprocessor, ConformerEncoder
from nemo.collections.asr.parts.preprocessing.features import FilterbankFeatures
from nemo.collections.asr.parts.submodules.subsampling import ConvSubsampling

from .latency import WindowGeometry

RETRAIN = (
    "These settings are part of what the model computes: no conversion reproduces its outputs in a stream. "
    "Pretrain (or fine-tune) a streaming model with conf/nest_fast-conformer_streaming.yaml (STREAMING_NEST.md)."
)
FRAME_LOCAL_NORMS = ("layer_norm", "batch_norm", "fused_batch_norm")
CAUSAL_SUBSAMPLINGS = ("striding", "dw_striding")


class NotStreamableError(ValueError):
    """The model cannot be streamed exactly; the message names each offending config key and the fix."""


@dataclass(frozen=True)
class StreamingSpec:
    """The numbers of a streamable model that the runner and the latency arithmetic need."""

    sample_rate: int
    geometry: WindowGeometry
    subsampling_factor: int
    left_context_frames: int  # -1: unlimited
    lookahead_frames: int  # right context of the attention, in encoder frames
    att_context_style: str
    att_chunk_frames: int  # attention chunk (lookahead + 1) for chunked_limited, 1 for regular
    history_mels: int  # mel frames of history the causal subsampling needs before a chunk
    d_model: int


def _normalize_kind(normalize) -> str | None:
    """None when frame-local (streamable), else the offending value as text."""
    if not normalize or normalize == "NA":
        return None
    if hasattr(normalize, "keys") and "fixed_mean" in normalize and "fixed_std" in normalize:
        return None
    return str(normalize)


def featurizer_problems(fz) -> list[str]:
    """Why NeMo's feature extractor ``fz`` cannot be computed piece by piece (empty: it can)."""
    if not isinstance(fz, FilterbankFeatures):
        return ["preprocessor.use_torchaudio: true; set it to false (the streaming runner mirrors FilterbankFeatures)"]
    problems = []
    if fz.exact_pad:
        problems.append(
            "preprocessor.exact_pad: true; NeMo then zeroes the last (n_fft - hop)/2 samples of every signal "
            "(its preemphasis mask is applied after the padding), which a stream cannot know in advance; "
            "use exact_pad: false (NeMo's default)"
        )
    kind = _normalize_kind(fz.normalize)
    if kind is not None:
        problems.append(
            f"preprocessor.normalize: {kind} uses statistics of the whole utterance, which a stream does not have "
            f"until it ends; streaming models use normalize: NA (or fixed_mean/fixed_std)"
        )
    if fz.frame_splicing != 1:
        problems.append(f"preprocessor.frame_splicing: {fz.frame_splicing}; the streaming runner supports 1")
    return problems


def check_preprocessor(preprocessor) -> list[str]:
    if not isinstance(preprocessor, AudioToMelSpectrogramPreprocessor):
        return [
            f"preprocessor is {type(preprocessor).__name__}; the streaming runner supports "
            "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor"
        ]
    return featurizer_problems(preprocessor.featurizer)


def window_geometry(featurizer: FilterbankFeatures) -> WindowGeometry:
    """Where NeMo's centred STFT reads the signal (exact_pad is refused above)."""
    return WindowGeometry(
        hop_samples=featurizer.hop_length,
        win_length=featurizer.win_length,
        n_fft=featurizer.n_fft,
        pad_samples=featurizer.n_fft // 2,
    )


def check_encoder(encoder) -> list[str]:
    if not isinstance(encoder, ConformerEncoder):
        return [f"encoder is {type(encoder).__name__}; cache-aware streaming needs a ConformerEncoder"]
    problems = []
    left, right = encoder.att_context_size
    if encoder.self_attention_model != "rel_pos":
        problems.append(
            f"encoder.self_attention_model: {encoder.self_attention_model}; the runner streams rel_pos attention"
        )
    if right < 0:
        problems.append(
            f"encoder.att_context_size: [{left}, {right}] is bidirectional (unlimited right context): every frame "
            f"sees the end of the utterance; set a limited right context with att_context_style: chunked_limited"
        )
    elif encoder.att_context_style == "regular" and right > 0:
        problems.append(
            f"encoder.att_context_style: regular with right context {right} gives each layer its own lookahead "
            f"(it adds up over layers and needs recomputation); use att_context_style: chunked_limited"
        )
    elif encoder.att_context_style not in ("regular", "chunked_limited"):
        problems.append(f"encoder.att_context_style: {encoder.att_context_style} is not supported")
    pre = encoder.pre_encode
    if not (isinstance(pre, ConvSubsampling) and pre.is_causal and pre._subsampling in CAUSAL_SUBSAMPLINGS):
        what = getattr(pre, "_subsampling", type(pre).__name__)
        causal = getattr(pre, "is_causal", False)
        problems.append(
            f"encoder subsampling {what} (causal_downsampling: {str(causal).lower()}) looks at future mel frames; "
            f"streaming needs subsampling: striding or dw_striding with causal_downsampling: true"
        )
    if encoder.conv_context_size[1] != 0:
        problems.append(
            f"encoder.conv_context_size: {list(encoder.conv_context_size)} gives the convolution module "
            f"{encoder.conv_context_size[1]} frames of lookahead in every layer; use conv_context_size: causal"
        )
    norm = encoder.layers[0].conv.norm_type
    if norm not in FRAME_LOCAL_NORMS:
        problems.append(
            f"encoder.conv_norm_type: {norm} pools statistics over time; use layer_norm (or batch_norm)"
        )
    if encoder.reduction_position is not None:
        problems.append("encoder.reduction: NeMo's cache-aware streaming does not support time reduction")
    return problems


def streaming_spec(model, name: str | None = None) -> StreamingSpec:
    """Check that ``model`` (preprocessor + encoder) streams exactly; return its numbers or raise.

    name: what the error calls the model (default its class name). Sets the encoder's streaming params.
    """
    problems = check_preprocessor(getattr(model, "preprocessor", None)) + check_encoder(getattr(model, "encoder", None))
    if problems:
        raise NotStreamableError(
            f"{name or type(model).__name__} is not a streaming model:\n  - " + "\n  - ".join(problems) + "\n" + RETRAIN
        )
    encoder = model.encoder
    left, right = encoder.att_context_size
    chunked = encoder.att_context_style == "chunked_limited"
    encoder.setup_streaming_params()  # NeMo's own numbers for the subsampling cache
    history = encoder.streaming_cfg.pre_encode_cache_size
    return StreamingSpec(
        sample_rate=int(model.preprocessor._sample_rate),
        geometry=window_geometry(model.preprocessor.featurizer),
        subsampling_factor=encoder.subsampling_factor,
        left_context_frames=left,
        lookahead_frames=right,
        att_context_style=encoder.att_context_style,
        att_chunk_frames=right + 1 if chunked else 1,
        history_mels=history[1] if isinstance(history, list) else history,
        d_model=encoder.d_model,
    )
