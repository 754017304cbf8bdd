"""``model.input_normalize``: turn the switch into the preprocessor config that applies it.

``type: fixed`` makes the preprocessor a ``FixedNormMelSpectrogramPreprocessor`` whose per-mel-bin numbers live
in ``model.preprocessor.fixed_mean`` / ``fixed_std``: the one place every user of the model reads (its forward,
a restored ``.nemo``, the streaming runner's copy, the fine-tuning config copied from the ``.nemo``). Missing
numbers are estimated once, when the model is first built, from ``model.train_ds``.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf, open_dict

from nemo.utils import logging

from ..modules.input_norm import check_fixed_stats, estimate_fixed_stats
from .config_checks import StreamingConfigError

INPUT_NORMALIZE_TYPES = ("NA", "fixed")
NEMO_PREPROCESSOR = "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor"
FIXED_PREPROCESSOR = "nemo_streaming_ssl.modules.FixedNormMelSpectrogramPreprocessor"
DEFAULT_MAX_UTTERANCES = 200


def _fail(key: str, problem: str, fix: str) -> None:
    raise StreamingConfigError(f"model.{key}: {problem}; {fix}")


def _manifest_paths(train_ds) -> list[str]:
    value = None if train_ds is None else train_ds.get("manifest_filepath")
    if value is None or OmegaConf.is_missing(train_ds, "manifest_filepath"):
        return []
    paths = value.split(",") if isinstance(value, str) else list(value)
    return [str(p).strip() for p in paths if str(p).strip()]


def apply_input_normalize(cfg: DictConfig) -> DictConfig:
    """``cfg`` (the model node) with the preprocessor ``model.input_normalize`` asks for; validates the numbers.

    Estimates missing numbers from the training manifest (modifies ``cfg``: the numbers are then saved with the
    model, so a restored or fine-tuned model uses the same map). Raises StreamingConfigError naming the key.
    """
    section = cfg.get("input_normalize") or {}
    kind = section.get("type", "NA")
    pre = cfg.preprocessor
    given = [key for key in ("fixed_mean", "fixed_std") if pre.get(key) is not None]
    if kind not in INPUT_NORMALIZE_TYPES:
        _fail("input_normalize.type", f"unknown value {kind!r}", f"use one of {INPUT_NORMALIZE_TYPES}")
    if kind == "NA":
        if given or pre.get("_target_") == FIXED_PREPROCESSOR:
            _fail(
                "input_normalize.type",
                f"NA, but model.preprocessor sets {given or '_target_'} (a fixed input map)",
                "set model.input_normalize.type=fixed, or drop those preprocessor keys",
            )
        return cfg
    if pre.get("normalize", "per_feature") not in (None, "NA"):
        _fail("preprocessor.normalize", f"{pre.get('normalize')!r} with input_normalize.type=fixed normalizes twice", "set it to NA")
    if pre.get("_target_") not in (NEMO_PREPROCESSOR, FIXED_PREPROCESSOR):
        _fail("preprocessor._target_", f"{pre.get('_target_')} cannot take a fixed input map", f"use {NEMO_PREPROCESSOR}")
    if len(given) == 1:
        _fail("preprocessor", f"only {given[0]} is set", "give both fixed_mean and fixed_std, or neither (estimated from train_ds)")
    max_utterances = section.get("max_utterances", DEFAULT_MAX_UTTERANCES)
    if not isinstance(max_utterances, int) or isinstance(max_utterances, bool) or max_utterances < 1:
        _fail("input_normalize.max_utterances", f"{max_utterances!r} is not a positive integer", "e.g. 200")
    with open_dict(cfg):
        if not given:
            paths = _manifest_paths(cfg.get("train_ds"))
            if not paths:
                _fail(
                    "input_normalize.type",
                    "fixed needs per-mel-bin statistics: model.preprocessor.fixed_mean/fixed_std are not set and "
                    "model.train_ds.manifest_filepath is not given to estimate them",
                    "give a training manifest, or the numbers (+model.preprocessor.fixed_mean=[...] +model.preprocessor.fixed_std=[...])",
                )
            plain = {k: v for k, v in OmegaConf.to_container(pre, resolve=True).items() if k not in ("fixed_mean", "fixed_std")}
            plain["_target_"] = NEMO_PREPROCESSOR
            from nemo.core.classes.common import Serialization

            mean, std = estimate_fixed_stats(Serialization.from_config_dict(OmegaConf.create(plain)), paths, max_utterances)
            pre.fixed_mean, pre.fixed_std = mean, std
            logging.info(f"model.input_normalize: per-mel-bin mean/std estimated from up to {max_utterances} utterances of {paths}")
        try:  # fail here, naming the key, before NeMo builds anything
            mean, std = check_fixed_stats(pre.fixed_mean, pre.fixed_std, int(pre.get("features", 64)))
        except ValueError as exc:
            raise StreamingConfigError(str(exc)) from None
        pre.fixed_mean, pre.fixed_std = mean, std
        pre._target_ = FIXED_PREPROCESSOR
    return cfg
