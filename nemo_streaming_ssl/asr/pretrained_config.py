"""Derive a fine-tuning model's encoder and preprocessor configs from a pretrained model's, and check them.

The pretrained weights only mean something inside the architecture they were trained in, and a streaming
model only streams if every part of it is causal. So the ASR model copies the pretrained encoder and
preprocessor configs; a key set in the fine-tuning config either may differ (regularisation, lookahead:
``TUNABLE_*``) or must equal the pretrained value. Plain OmegaConf: NeMo is imported only to compare
the classes two ``_target_`` keys name.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

# Keys that change training behaviour or the lookahead, never the shape or meaning of a weight.
TUNABLE_ENCODER_KEYS = frozenset(
    {
        "dropout",
        "dropout_pre_encoder",
        "dropout_emb",
        "dropout_att",
        "stochastic_depth_drop_prob",
        "stochastic_depth_mode",
        "stochastic_depth_start_layer",
        "att_context_size",  # which lookahead(s) to fine-tune for; the streaming check below still applies
        "att_context_probs",
        "use_pytorch_sdpa",
        "use_pytorch_sdpa_backends",
        "sync_max_audio_length",
        "subsampling_conv_chunking_factor",  # memory chunking of the subsampling convs, same result
        "pos_emb_max_len",  # length of the sinusoidal position table (not a weight), same result
    }
)
# Dither is training-time noise; every other preprocessor key defines the features the encoder was trained on.
TUNABLE_PREPROCESSOR_KEYS = frozenset({"dither"})
# Whole-utterance feature statistics need the future: not streamable.
UNSTREAMABLE_NORMALIZE = ("per_feature", "all_features")


class PretrainedMismatchError(ValueError):
    """The pretrained model cannot initialise the requested ASR model. The message names the keys and the fix."""


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise PretrainedMismatchError(f"cannot import class {path!r} ({exc}); run from the project root with PYTHONPATH=.") from exc


def is_base_class(base_path: str, derived_path: str) -> bool:
    """Whether class ``derived_path`` is ``base_path`` or derives from it (both "module.Class" paths)."""
    return issubclass(import_class(derived_path), import_class(base_path))


def merge_module_config(
    module: str, pretrained: Mapping, overrides: Mapping | None, tunable: frozenset[str]
) -> DictConfig:
    """The pretrained ``module`` config with ``overrides`` applied; null overrides mean "keep the pretrained value".

    ``_target_`` may name a base class of the pretrained one (e.g. NeMo's ConformerEncoder for a project
    subclass that only adds bookkeeping), so the fine-tuned model needs no project code.
    Raises PretrainedMismatchError naming every other non-tunable key whose override differs from the pretrained value.
    """
    merged = OmegaConf.create(_plain(pretrained))
    conflicts = []
    for key, value in (_plain(overrides) or {}).items():
        if value is None:
            continue
        if key in tunable or (key == "_target_" and "_target_" in merged and is_base_class(value, merged._target_)):
            merged[key] = value
        elif key not in merged or _plain(merged[key]) != value:
            conflicts.append(f"  model.{module}.{key}: pretrained {_plain(merged.get(key, '<unset>'))!r}, given {value!r}")
    if conflicts:
        raise PretrainedMismatchError(
            f"model.{module} disagrees with the pretrained model on keys that define its weights or features:\n"
            + "\n".join(conflicts)
            + f"\nThe {module} config is copied from the pretrained .nemo: drop these keys (or set them to null). "
            f"Keys that may differ: {', '.join(sorted(tunable))}; _target_ may name a base class of the pretrained one."
        )
    return merged


def streaming_problems(encoder: Mapping, preprocessor: Mapping) -> list[str]:
    """Why this encoder/preprocessor pair cannot run NeMo's cache-aware streaming exactly (empty list: it can)."""
    enc, pre = _plain(encoder), _plain(preprocessor)
    problems = []
    if not enc.get("causal_downsampling", False):
        problems.append(f"encoder.causal_downsampling is {enc.get('causal_downsampling', False)!r}, needs true")
    conv = enc.get("conv_context_size")
    if not (conv == "causal" or (isinstance(conv, list) and len(conv) == 2 and conv[1] == 0)):
        problems.append(f"encoder.conv_context_size is {conv!r}, needs 'causal' (no convolution lookahead)")
    att = enc.get("att_context_size") or [[-1, -1]]
    pairs = [att] if isinstance(att[0], int) else att
    unlimited = [pair for pair in pairs if pair[1] < 0]
    if unlimited:
        problems.append(
            f"encoder.att_context_size {att!r} has unlimited right context in {unlimited}; needs a finite lookahead, "
            "e.g. [-1, 4] (4 frames = 320 ms) with att_context_style chunked_limited"
        )
    normalize = pre.get("normalize")
    if normalize in UNSTREAMABLE_NORMALIZE:
        problems.append(f"preprocessor.normalize is {normalize!r} (whole-utterance statistics), needs 'NA'")
    return problems


def finetune_module_configs(
    pretrained_model_cfg: Mapping, encoder_overrides: Mapping | None, preprocessor_overrides: Mapping | None, source: str
) -> tuple[DictConfig, DictConfig]:
    """(encoder, preprocessor) configs for the ASR model: the pretrained ones plus validated overrides.

    Raises PretrainedMismatchError when an override changes the architecture, or when the result cannot stream.
    """
    for module in ("encoder", "preprocessor"):
        if module not in pretrained_model_cfg:
            raise PretrainedMismatchError(f"{source}: its config has no '{module}' section; is it a NeMo speech model?")
    encoder = merge_module_config("encoder", pretrained_model_cfg["encoder"], encoder_overrides, TUNABLE_ENCODER_KEYS)
    preprocessor = merge_module_config(
        "preprocessor", pretrained_model_cfg["preprocessor"], preprocessor_overrides, TUNABLE_PREPROCESSOR_KEYS
    )
    fixed_map = "nemo_streaming_ssl.modules.FixedNormMelSpectrogramPreprocessor"
    if "fixed_mean" in preprocessor and not is_base_class(fixed_map, preprocessor._target_):
        # A base class would drop the pretrained model's fixed input map (model.input_normalize: fixed).
        raise PretrainedMismatchError(
            f"model.preprocessor._target_: {preprocessor._target_} cannot apply the fixed input normalization "
            f"(fixed_mean/fixed_std) {source} was pretrained with; drop the key (keep {fixed_map})"
        )
    problems = streaming_problems(encoder, preprocessor)
    if problems:
        raise PretrainedMismatchError(
            f"{source} (with the fine-tuning overrides) is not a streaming model:\n  "
            + "\n  ".join(problems)
            + "\nPretrain with conf/nest_fast-conformer_streaming*.yaml, or fine-tune an offline model with an offline recipe."
        )
    return encoder, preprocessor
