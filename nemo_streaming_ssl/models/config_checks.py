"""Streaming safety checks on a NEST model config, run before any module is built.

Each check refuses a setting that would let an encoder frame depend on the future (or on other
utterances of the batch) and names the config key and the fix.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig

from ..modules import CausalBlockMasking, MultiLatencyConformerEncoder
from ..receptive_field import TARGET_ALIGNMENTS

CAUSAL_SUBSAMPLING = ("dw_striding", "striding")  # the ConvSubsampling kinds with a causal variant
TARGET_NORMALIZE = (None, "NA", "per_feature", "all_features")


class StreamingConfigError(ValueError):
    """A model config that cannot train a streaming encoder. The message names the key and the fix."""


def att_context_pairs(att_context_size: Any) -> list[list[int]]:
    """``att_context_size`` as NeMo accepts it ([l, r] or [[l, r], ...]) -> list of [left, right] pairs."""
    if att_context_size is None:
        return [[-1, -1]]
    values = list(att_context_size)
    if values and not isinstance(values[0], (list, tuple, ListConfig)):
        values = [values]
    pairs = []
    for value in values:
        pair = list(value)
        if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
            raise StreamingConfigError(
                f"model.encoder.att_context_size: each entry must be a pair [left, right] of ints, got {value}"
            )
        pairs.append(pair)
    return pairs


def _fail(key: str, problem: str, fix: str) -> None:
    raise StreamingConfigError(f"model.{key}: {problem}; {fix}")


def _check_preprocessor(pre: DictConfig) -> None:
    if pre.get("normalize", None) not in (None, "NA"):
        _fail(
            "preprocessor.normalize",
            f"'{pre.normalize}' normalizes with statistics of the whole utterance (the future)",
            "set model.preprocessor.normalize=NA (targets may still use model.target_normalize=per_feature)",
        )
    if pre.get("pad_to", 16) != 0:
        _fail(
            "preprocessor.pad_to",
            f"{pre.get('pad_to', 16)} pads features to a multiple, unlike streaming inference",
            "set model.preprocessor.pad_to=0",
        )


def _check_encoder(enc: DictConfig, pairs: list[list[int]]) -> None:
    if not enc.get("causal_downsampling", False):
        _fail("encoder.causal_downsampling", "false lets subsampling see future frames", "set it to true")
    if enc.get("subsampling", "striding") not in CAUSAL_SUBSAMPLING:
        _fail("encoder.subsampling", f"'{enc.get('subsampling')}' has no causal variant", f"use one of {CAUSAL_SUBSAMPLING}")
    if enc.get("reduction", None):
        _fail("encoder.reduction", "time reduction inside the encoder is not supported for streaming", "set it to null")
    if enc.get("conv_norm_type", "batch_norm") != "layer_norm":
        _fail(
            "encoder.conv_norm_type",
            f"'{enc.get('conv_norm_type', 'batch_norm')}' pools statistics over time and the batch in training",
            "set model.encoder.conv_norm_type=layer_norm",
        )
    kernel = enc.get("conv_kernel_size", 31)
    conv_context = enc.get("conv_context_size", None)
    if conv_context != "causal" and (conv_context is None or list(conv_context) != [kernel - 1, 0]):
        _fail(
            "encoder.conv_context_size",
            f"{conv_context} lets the convolution module see future frames",
            f"set model.encoder.conv_context_size=causal (= [{kernel - 1}, 0])",
        )
    if enc.get("self_attention_model", "rel_pos") != "rel_pos":
        _fail(
            "encoder.self_attention_model",
            f"'{enc.self_attention_model}' cannot be streamed by nemo_streaming_ssl.streaming (it streams relative-position attention)",
            "set model.encoder.self_attention_model=rel_pos",
        )
    style = enc.get("att_context_style", "regular")
    if style not in ("chunked_limited", "regular"):
        _fail("encoder.att_context_style", f"unknown style '{style}'", "use chunked_limited (or regular)")
    for i, (left, right) in enumerate(pairs):
        where = f"encoder.att_context_size (pair {i}: [{left}, {right}])"
        if right < 0:
            _fail(where, "right context -1 is unlimited lookahead (offline)", "give a finite right context, e.g. [-1, 0]")
        if left < -1:
            _fail(where, "left context must be -1 (unlimited) or >= 0 frames", "fix the pair")
        if style == "chunked_limited" and left >= 0 and left % (right + 1):
            _fail(
                where,
                f"chunked_limited needs left % (right+1) == 0 (chunks of {right + 1} frames)",
                f"use a multiple of {right + 1}, e.g. {left // (right + 1) * (right + 1)} or "
                f"{(left // (right + 1) + 1) * (right + 1)}",
            )
    if len(pairs) > 1 and not issubclass(get_class(enc._target_), MultiLatencyConformerEncoder):
        _fail(
            "encoder._target_",
            f"{enc._target_} does not tell which att_context_size pair it drew for a batch",
            "use nemo_streaming_ssl.modules.MultiLatencyConformerEncoder for a list of pairs",
        )


def _check_targets(cfg: DictConfig, factor: int) -> None:
    if cfg.get("mask_position", "pre_conv") != "pre_conv":
        _fail("mask_position", f"'{cfg.mask_position}' is not supported (broken in NeMo 2.5.3)", "use pre_conv")
    for key in ("quantizer", "loss"):
        steps = cfg[key].get("combine_time_steps", 1)
        if steps != factor:
            _fail(
                f"{key}.combine_time_steps",
                f"{steps} differs from model.encoder.subsampling_factor={factor} (a token is one encoder frame)",
                f"set it to {factor}",
            )
    if cfg.get("target_normalize", None) not in TARGET_NORMALIZE:
        _fail("target_normalize", f"unknown value '{cfg.target_normalize}'", f"use one of {TARGET_NORMALIZE}")


def _check_masking(masking: DictConfig, enc: DictConfig, pairs: list[list[int]], factor: int) -> None:
    if not issubclass(get_class(masking._target_), CausalBlockMasking):
        _fail(
            "masking._target_",
            f"{masking._target_} can mask part of a token, so the predicting frame sees part of its target",
            "use nemo_streaming_ssl.modules.CausalBlockMasking",
        )
    if masking.get("combine_time_steps", 1) != factor:
        steps = masking.get("combine_time_steps", 1)
        _fail("masking.combine_time_steps", f"{steps} mel frames is not a whole token", f"set it to {factor}")
    span = masking.get("block_size", 40) // factor
    context = masking.get("left_context_size", 0)
    if context == 0:
        return
    style = enc.get("att_context_style", "regular")
    for i, (left, right) in enumerate(pairs):
        if left < 0:
            continue
        if style == "regular" and (enc.n_layers - 1) * right > 1:
            _fail(
                "masking.left_context_size",
                f"regular attention with lookahead (pair {i}) predicts from frames whose window can miss the context",
                "use att_context_style=chunked_limited, or left_context_size=0",
            )
        if span + context > left + 1:
            _fail(
                "masking.left_context_size",
                f"a span of {span} tokens (masking.block_size/{factor}) plus {context} context tokens does not "
                f"fit in the {left + 1} frames of attention window behind a predicting frame "
                f"(model.encoder.att_context_size pair {i}: [{left}, {right}])",
                f"keep block_size/{factor} + left_context_size <= {left + 1}",
            )


def check_target_alignment(cfg: DictConfig) -> None:
    """Refuse an unknown ``model.target_alignment`` (checked in every mode; only streaming uses it)."""
    value = cfg.get("target_alignment", "earliest_complete")
    if value not in TARGET_ALIGNMENTS:
        _fail("target_alignment", f"unknown value '{value}'", f"use one of {TARGET_ALIGNMENTS}")


def check_streaming_config(cfg: DictConfig) -> None:
    """Refuse a model config (the ``model`` node) that cannot train a streaming encoder exactly."""
    enc = cfg.encoder
    pairs = att_context_pairs(enc.get("att_context_size", None))
    _check_preprocessor(cfg.preprocessor)
    _check_encoder(enc, pairs)
    factor = enc.get("subsampling_factor", 4)
    _check_targets(cfg, factor)
    _check_masking(cfg.masking, enc, pairs, factor)
