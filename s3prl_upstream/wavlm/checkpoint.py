"""Strict checkpoint loading for the streaming WavLM, and conversion of Microsoft/s3prl WavLM checkpoints.

Accepted (STREAMING_WAVLM.md, "Checkpoints and model configs"):

* the v0.0.2 state dict itself, or a dict holding it under ``student_state_dict`` or ``state_dict``;
  keys may carry ``module.`` / ``_orig_mod.`` prefixes (stripped);
* the older v0.0.1 layout: ``attention.{q,k,v}_proj`` are concatenated into ``qkv_proj`` (rows q, k, v)
  and its unused ``encoder.norm.*`` is dropped;
* a dict carrying its own config under ``model_config`` (``{"wavlm": {...}}``): then no ``-g`` is needed,
  and a ``-g`` that disagrees with it is an error;
* Microsoft/s3prl WavLM ``{"cfg", "model"}`` in WavLM Large style (LayerNorm conv blocks, pre-LN layers).
  Base/Base+ style (GroupNorm front end, post-LN layers) is refused with the reason.

Every load is strict: any missing, unexpected or mis-shaped key raises :class:`CheckpointError`.
Files are read weights-only: one holding other pickled Python objects is refused unless the caller opts in
(``trust_pickle=True`` or ``STREAMING_SSL_TRUST_PICKLED_CHECKPOINTS=1``), see :func:`read_checkpoint`.
"""

from __future__ import annotations

import ast
import logging
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nemo_streaming_ssl.core.fast_linear import use_fast_cpu_linears

from .config import ModelConfigError, StreamingWavLMConfig, resolve_model_config
from .model import StreamingWavLM

log = logging.getLogger(__name__)

STRIPPED_PREFIXES = ("module.", "_orig_mod.")
STATE_DICT_KEYS = ("student_state_dict", "state_dict")
# Config fields a Microsoft checkpoint does not determine: they come from -g when one is given.
STREAMING_FIELDS = ("causal", "window_size", "lookahead_size", "dropout")
MAX_LISTED_KEYS = 12
# Unpickling arbitrary objects can run code, so a checkpoint that is more than weights loads only on an
# explicit opt-in: the trust_pickle argument, or this variable for entry points without one (run_downstream.py).
TRUST_PICKLE_ENV = "STREAMING_SSL_TRUST_PICKLED_CHECKPOINTS"
ENV_TRUE, ENV_FALSE = ("1", "true", "yes"), ("", "0", "false", "no")
TRUST_PICKLE_FIX = (f"pass trust_pickle=True (load_streaming_wavlm, the s3prl hub entries; teacher.trust_pickle=true "
                    f"in the distillation config) or set {TRUST_PICKLE_ENV}=1")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded exactly. The message lists the offending keys and the fix."""


# ------------------------------------------------------------------------------------------ loading
def load_streaming_wavlm(ckpt: str | Path | Mapping[str, Any],
                         model_config: StreamingWavLMConfig | Mapping | str | Path | None = None, *,
                         trust_pickle: bool = False) -> StreamingWavLM:
    """Build a StreamingWavLM from a checkpoint (path or loaded dict) in any accepted format, for inference: in
    eval mode, with the few-row CPU path of its linear layers (``use_fast_cpu_linears``; training works too).

    model_config (``-g``): YAML path, dict (either format) or config; None: the checkpoint's own config,
    else the defaults. trust_pickle: see :func:`read_checkpoint`. Raises CheckpointError / ModelConfigError
    with the fix.
    """
    source = str(ckpt) if isinstance(ckpt, (str, Path)) else "<checkpoint dict>"
    data = read_checkpoint(ckpt, trust_pickle=trust_pickle) if isinstance(ckpt, (str, Path)) else ckpt
    given = resolve_model_config(model_config)
    state_dict, own_config, agreeing_fields = unpack_checkpoint(data, source)
    if own_config is None:
        cfg = given or StreamingWavLMConfig()
    elif given is None:
        cfg = own_config
    else:
        diffs = given.differences(own_config, agreeing_fields)
        if diffs:
            raise ModelConfigError(f"the model config (-g) disagrees with the config stored in {source}: "
                                   + "; ".join(diffs) + ". Drop -g (the checkpoint knows its config) or fix it.")
        cfg = given
    model = StreamingWavLM(cfg)
    load_state_dict_strict(model, state_dict, source)
    use_fast_cpu_linears(model)
    return model.eval()


def read_checkpoint(path: str | Path, *, trust_pickle: bool = False, given_as: str | None = None) -> Any:
    """torch.load on CPU, weights only: tensors, containers and numbers, never code.

    A file holding other pickled Python objects is refused with CheckpointError, unless the caller passed
    trust_pickle=True or the environment sets TRUST_PICKLE_ENV=1. given_as: the setting that named the file.
    """
    path = Path(path)
    where = f"{path} (given as {given_as})" if given_as else str(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {where} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refusal = err
    except Exception as err:  # torch raises many types for a non-checkpoint file
        raise CheckpointError(f"{where} is not a readable torch checkpoint: {type(err).__name__}: {err}") from err
    found = _unsafe_globals(path, refusal)
    trusted_by = "trust_pickle=True" if trust_pickle else f"{TRUST_PICKLE_ENV}=1" if _env_trusts_pickle() else None
    if trusted_by is not None:
        log.warning("%s: unpickling it in full (%s) because of %s", where, ", ".join(found) or "no weights-only load",
                    trusted_by)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:
            raise CheckpointError(f"{where} is not a readable torch checkpoint: {type(err).__name__}: {err}") from err
    if not found:
        raise CheckpointError(f"{where} is not a readable torch checkpoint: weights-only loading fails "
                              f"({_torch_reason(refusal)}). If it is an older pickle you trust, "
                              f"{TRUST_PICKLE_FIX}.") from refusal
    raise CheckpointError(
        f"{where} contains pickled Python objects ({', '.join(found)}), not only weights: loading it could run "
        f"code, so it is refused. Only if you trust where the file came from, {TRUST_PICKLE_FIX}. Better: load it "
        f"once that way and re-save it as a plain state dict (tensors, dicts, lists, numbers and strings only), "
        f"which loads without trust.") from refusal


def _env_trusts_pickle() -> bool:
    value = os.environ.get(TRUST_PICKLE_ENV, "").strip().lower()
    if value not in ENV_TRUE + ENV_FALSE:
        raise CheckpointError(f"{TRUST_PICKLE_ENV}={os.environ[TRUST_PICKLE_ENV]!r}: set it to 1 (trust pickled "
                              f"checkpoints) or 0 / unset (weights only)")
    return value in ENV_TRUE


def _unsafe_globals(path: Path, refusal: pickle.UnpicklingError) -> list[str]:
    """The classes/functions that made weights-only loading refuse the file, read without unpickling it."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not torch's zip format (legacy torch.save, plain pickle, junk): torch names the first one
        return re.findall(r"GLOBAL ([\w.]+)", str(refusal))


def _torch_reason(refusal: pickle.UnpicklingError) -> str:
    lines = [line.strip() for line in str(refusal).splitlines() if line.strip()]
    reasons = [line.split("error:", 1)[1].strip() for line in lines if "WeightsUnpickler error:" in line]
    return (reasons or lines or [type(refusal).__name__])[-1]


def unpack_checkpoint(data: Any, source: str) -> tuple[dict[str, Tensor], StreamingWavLMConfig | None, tuple[str, ...]]:
    """-> (state dict in our layout, the checkpoint's own config or None, config fields that -g must match)."""
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{source}: expected a dict (state dict or checkpoint), got {type(data).__name__}")
    if "cfg" in data and "model" in data:
        state_dict, cfg = convert_wavlm_checkpoint(data, source=source)
        weight_fields = tuple(f for f in cfg.to_dict()["wavlm"] if f not in STREAMING_FIELDS)
        return state_dict, cfg, weight_fields
    own_config = None
    if "model_config" in data:
        own_config = StreamingWavLMConfig.from_dict(data["model_config"], source=f"{source} [model_config]")
    container = next((k for k in STATE_DICT_KEYS if k in data), None)
    if container is not None:
        state_dict = data[container]
    else:
        state_dict = {k: v for k, v in data.items() if k != "model_config"}
        if not state_dict or not all(isinstance(v, Tensor) for v in state_dict.values()):
            raise CheckpointError(
                f"{source}: no weights found. Top-level keys: {_listing(sorted(map(str, data)))}. Accepted: a state "
                f"dict, a dict with {' or '.join(STATE_DICT_KEYS)} (optionally with model_config), or a Microsoft/"
                f"s3prl WavLM checkpoint with 'cfg' and 'model'.")
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{source}: {container!r} is a {type(state_dict).__name__}, expected a state dict")
    return normalize_state_dict(state_dict, source), own_config, tuple(own_config.to_dict()["wavlm"]) if own_config else ()


def normalize_state_dict(state_dict: Mapping[str, Any], source: str) -> dict[str, Tensor]:
    """Strip ``module.`` / ``_orig_mod.`` prefixes and bring the v0.0.1 layout to v0.0.2."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{source}: state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        stripped = key
        while stripped.startswith(STRIPPED_PREFIXES):
            stripped = stripped.split(".", 1)[1]
        if stripped in out:
            raise CheckpointError(f"{source}: keys {key!r} and another both become {stripped!r} once prefixes are stripped")
        out[stripped] = value
    separate = [k for k in out if re.fullmatch(r"encoder\.layers\.\d+\.attention\.q_proj\.(weight|bias)", k)]
    if not separate:
        return out
    log.info("%s: v0.0.1 layout: concatenating q/k/v_proj into qkv_proj and dropping encoder.norm.*", source)
    for q_key in separate:
        parts = [q_key.replace(".q_proj.", f".{name}.") for name in ("q_proj", "k_proj", "v_proj")]
        if all(p in out for p in parts):
            out[q_key.replace(".q_proj.", ".qkv_proj.")] = torch.cat([out.pop(p) for p in parts], dim=0)
    for key in ("encoder.norm.weight", "encoder.norm.bias"):
        out.pop(key, None)
    return out


def load_state_dict_strict(model: StreamingWavLM, state_dict: Mapping[str, Tensor], source: str) -> None:
    """load_state_dict(strict=True), after listing every mismatch with a fix in one CheckpointError."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
                    for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape)
    if missing or unexpected or shapes:
        lines = [f"{source} does not match the model exactly (config from {model.config.source}):"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): {_listing(shapes)}")
        lines.append("  fix: " + _mismatch_hint(model.config, state_dict, unexpected, set(expected)))
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state_dict, strict=True)


def _mismatch_hint(cfg: StreamingWavLMConfig, state_dict: Mapping[str, Tensor], unexpected: list[str],
                   expected: set[str]) -> str:
    prefixes = {k.split(".", 1)[0] + "." for k in unexpected if "." in k}
    for prefix in prefixes:
        if all(k.startswith(prefix) for k in unexpected) and any(k[len(prefix):] in expected for k in unexpected):
            return (f"the keys carry the prefix {prefix!r}; save the bare model state dict "
                    f"(strip {prefix!r} from every key) or under 'student_state_dict'.")
    seen = _architecture_of(state_dict)
    wrong = {k: v for k, v in seen.items() if getattr(cfg, k) != v}
    if wrong:
        yaml_lines = ", ".join(f"{k}: {list(v) if isinstance(v, tuple) else v}" for k, v in wrong.items())
        return (f"the weights look like {seen}, the model config says "
                f"{ {k: getattr(cfg, k) for k in wrong} }; pass a model config (-g) with `wavlm:` {{{yaml_lines}}}.")
    return "this is not a streaming WavLM checkpoint of the v0.0.1/v0.0.2 layout, or it was saved incompletely."


def _architecture_of(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """Architecture facts readable from the weights alone (for error hints)."""
    seen: dict[str, Any] = {}
    convs: list[Tensor] = []
    while (conv := state_dict.get(f"feature_extractor.layers.{len(convs)}.conv.weight")) is not None:
        convs.append(conv)
    if convs:
        seen["hidden_dims"] = tuple(c.shape[0] for c in convs)
        seen["kernel_sizes"] = tuple(c.shape[-1] for c in convs)
    layers = {int(m.group(1)) for k in state_dict if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    if layers:
        seen["num_layers"] = max(layers) + 1
    if "feature_proj.weight" in state_dict:
        seen["dim"] = state_dict["feature_proj.weight"].shape[0]
    if "encoder.layers.0.feed_forward.in_proj.weight" in state_dict:
        seen["ffn_dim"] = state_dict["encoder.layers.0.feed_forward.in_proj.weight"].shape[0]
    if "encoder.positional_embedding.conv.weight" in state_dict:
        pos = state_dict["encoder.positional_embedding.conv.weight"]
        seen["conv_pos"], seen["conv_pos_groups"] = pos.shape[-1], pos.shape[0] // max(pos.shape[1], 1)
    if "encoder.relative_embedding.weight" in state_dict:
        seen["num_buckets"], seen["num_heads"] = state_dict["encoder.relative_embedding.weight"].shape
    return seen


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED_KEYS])
    return shown + (f", ... and {len(items) - MAX_LISTED_KEYS} more" if len(items) > MAX_LISTED_KEYS else "")


# --------------------------------------------------------------------------- Microsoft/s3prl WavLM
# Defaults of Microsoft's WavLMConfig, for keys a checkpoint's cfg leaves out.
MS_DEFAULTS: dict[str, Any] = {
    "extractor_mode": "default", "encoder_layers": 12, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12, "activation_fn": "gelu", "layer_norm_first": False,
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2", "conv_bias": False,
    "normalize": False, "conv_pos": 128, "conv_pos_groups": 16, "relative_position_embedding": False,
    "num_buckets": 320, "max_distance": 1280, "gru_rel_pos": False,
}
# Pretraining-only parameters with no role in feature extraction, and the final LayerNorm this
# architecture does not have (its outputs are the layer outputs before it).
MS_DROPPED = re.compile(r"mask_emb|label_embs_concat|final_proj\..*|encoder\.layer_norm\.(weight|bias)")
MS_LAYER_MAP = {
    "self_attn.out_proj": "attention.out_proj",
    "self_attn.grep_linear": "attention.gru_rel_pos_linear",
    "self_attn_layer_norm": "attention_norm",
    "final_layer_norm": "feed_forward_norm",
    "fc1": "feed_forward.in_proj",
    "fc2": "feed_forward.out_proj",
}


def convert_wavlm_checkpoint(ckpt: Mapping[str, Any], num_layers: int | None = None,
                             source: str = "<checkpoint dict>") -> tuple[dict[str, Tensor], StreamingWavLMConfig]:
    """Microsoft/s3prl WavLM ``{"cfg": ..., "model": state_dict}`` -> (our v0.0.2 state dict, config).

    The config is non-causal (the source model is); set causal/window/lookahead for a student.
    num_layers keeps only the first layers (e.g. 6 for the distillation teacher); None keeps all.
    Refuses WavLM Base/Base+ style checkpoints, and any key it cannot place, with the reason.
    """
    if not isinstance(ckpt, Mapping) or "cfg" not in ckpt or "model" not in ckpt:
        raise CheckpointError(f"{source}: a Microsoft/s3prl WavLM checkpoint is a dict with 'cfg' and 'model'")
    raw_cfg = ckpt["cfg"] if isinstance(ckpt["cfg"], Mapping) else vars(ckpt["cfg"])
    ms = {**MS_DEFAULTS, **raw_cfg}
    reasons = []
    if ms["extractor_mode"] != "layer_norm":
        reasons.append(f"extractor_mode {ms['extractor_mode']!r} (WavLM Base/Base+: GroupNorm on the first conv "
                       f"block only) has no equivalent; this architecture has a LayerNorm in every conv block")
    if not ms["layer_norm_first"]:
        reasons.append("layer_norm_first false: post-LN layers (WavLM Base/Base+); this architecture is pre-LN")
    if not (ms["relative_position_embedding"] and ms["gru_rel_pos"]):
        reasons.append("no gated relative position bias (relative_position_embedding and gru_rel_pos must be true)")
    if ms["activation_fn"] != "gelu":
        reasons.append(f"activation_fn {ms['activation_fn']!r}; this architecture uses gelu")
    if ms["conv_bias"]:
        reasons.append("conv_bias true; this architecture's front-end convolutions have no bias")
    if reasons:
        raise CheckpointError(f"{source}: cannot convert this WavLM checkpoint: " + "; ".join(reasons)
                              + ". Only WavLM Large-style checkpoints map onto the streaming WavLM.")
    total_layers = int(ms["encoder_layers"])
    num_layers = total_layers if num_layers is None else num_layers
    if not 1 <= num_layers <= total_layers:
        raise CheckpointError(f"{source}: num_layers must be in 1..{total_layers}, got {num_layers}")
    conv_layers = _conv_feature_layers(ms["conv_feature_layers"], source)
    try:
        cfg = StreamingWavLMConfig(
            hidden_dims=tuple(c[0] for c in conv_layers), kernel_sizes=tuple(c[1] for c in conv_layers),
            strides=tuple(c[2] for c in conv_layers), num_layers=num_layers, dim=int(ms["encoder_embed_dim"]),
            ffn_dim=int(ms["encoder_ffn_embed_dim"]), num_heads=int(ms["encoder_attention_heads"]),
            num_buckets=int(ms["num_buckets"]), max_distance=int(ms["max_distance"]), conv_pos=int(ms["conv_pos"]),
            conv_pos_groups=int(ms["conv_pos_groups"]), causal=False, source=f"{source} [Microsoft WavLM cfg]")
    except ModelConfigError as err:
        raise CheckpointError(str(err)) from err
    if ms["normalize"]:
        warnings.warn(f"{source}: this WavLM was trained on per-utterance normalized waveforms (normalize: true); "
                      f"the streaming WavLM does not normalize (it cannot while streaming). Normalize the input "
                      f"yourself to reproduce the original model exactly.", stacklevel=2)
    return _map_ms_state_dict(ckpt["model"], cfg, total_layers, source), cfg


def _conv_feature_layers(spec: Any, source: str) -> list[tuple[int, int, int]]:
    """Evaluate a conv_feature_layers spec like "[(512,10,5)] + [(512,3,2)] * 4" without eval()."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(ast.dump(node))

    try:
        layers = value(ast.parse(spec, mode="eval").body) if isinstance(spec, str) else list(spec)
        layers = [tuple(int(v) for v in layer) for layer in layers]
        if not layers or any(len(layer) != 3 for layer in layers):
            raise ValueError("expected (dim, kernel, stride) triples")
    except (ValueError, TypeError, SyntaxError) as err:
        raise CheckpointError(f"{source}: cannot read conv_feature_layers {spec!r}: {err}") from err
    return layers


def _map_ms_state_dict(model: Mapping[str, Tensor], cfg: StreamingWavLMConfig, total_layers: int,
                       source: str) -> dict[str, Tensor]:
    src = dict(model)
    out: dict[str, Tensor] = {}
    problems: list[str] = []

    def take(src_key: str, dst_key: str) -> None:
        if src_key in src:
            out[dst_key] = src.pop(src_key)
        else:
            problems.append(f"missing {src_key}")

    for i in range(len(cfg.hidden_dims)):
        take(f"feature_extractor.conv_layers.{i}.0.weight", f"feature_extractor.layers.{i}.conv.weight")
        for p in ("weight", "bias"):
            take(f"feature_extractor.conv_layers.{i}.2.1.{p}", f"feature_extractor.layers.{i}.norm.{p}")
    for p in ("weight", "bias"):
        take(f"layer_norm.{p}", f"norm.{p}")
    if "post_extract_proj.weight" in src or cfg.hidden_dims[-1] != cfg.dim:
        for p in ("weight", "bias"):
            take(f"post_extract_proj.{p}", f"feature_proj.{p}")
    else:  # WavLM skips the projection when the widths match: an identity map is exact.
        out["feature_proj.weight"] = torch.eye(cfg.dim)
        out["feature_proj.bias"] = torch.zeros(cfg.dim)
    out["encoder.positional_embedding.conv.weight"] = _fold_weight_norm(src, "encoder.pos_conv.0", problems)
    take("encoder.pos_conv.0.bias", "encoder.positional_embedding.conv.bias")
    take("encoder.layers.0.self_attn.relative_attention_bias.weight", "encoder.relative_embedding.weight")
    for i in range(total_layers):
        s, d = f"encoder.layers.{i}.", f"encoder.layers.{i}."
        if i >= cfg.num_layers:  # layers beyond num_layers are dropped on request
            for key in [k for k in src if k.startswith(s)]:
                src.pop(key)
            continue
        for p in ("weight", "bias"):
            qkv = []
            for name in ("q_proj", "k_proj", "v_proj"):
                key = f"{s}self_attn.{name}.{p}"
                if key in src:
                    qkv.append(src.pop(key))
                elif name == "k_proj" and p == "bias":  # WavLM's rescale_init drops the key bias: it is zero
                    qkv.append(torch.zeros(cfg.dim))
                else:
                    problems.append(f"missing {key}")
            if len(qkv) == 3:
                out[f"{d}attention.qkv_proj.{p}"] = torch.cat(qkv, dim=0)
        for src_name, dst_name in MS_LAYER_MAP.items():
            for p in ("weight", "bias"):
                take(f"{s}{src_name}.{p}", f"{d}{dst_name}.{p}")
        take(f"{s}self_attn.grep_a", f"{d}attention.gru_rel_pos_const")
    leftover = sorted(k for k in src if not MS_DROPPED.fullmatch(k))
    if leftover:
        problems.append(f"unexpected {_listing(leftover)}")
    if problems:
        raise CheckpointError(f"{source}: Microsoft WavLM state dict does not match its cfg: " + "; ".join(problems[:MAX_LISTED_KEYS]))
    return out


def _fold_weight_norm(src: dict[str, Tensor], prefix: str, problems: list[str]) -> Tensor | None:
    """weight = g * v / ||v||, the norm taken over the axes where g has size 1 (old and new torch key names)."""
    for g_key, v_key in ((f"{prefix}.weight_g", f"{prefix}.weight_v"),
                         (f"{prefix}.parametrizations.weight.original0", f"{prefix}.parametrizations.weight.original1")):
        if g_key in src and v_key in src:
            g, v = src.pop(g_key), src.pop(v_key)
            axes = tuple(i for i in range(v.dim()) if g.shape[i] == 1)
            return v * (g / v.pow(2).sum(dim=axes, keepdim=True).sqrt())
    if f"{prefix}.weight" in src:
        return src.pop(f"{prefix}.weight")
    problems.append(f"missing {prefix}.weight_g/weight_v")
    return None
