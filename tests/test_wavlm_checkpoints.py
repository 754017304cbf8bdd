"""Checkpoint formats and model configs of the streaming WavLM: every accepted format loads strictly and
gives the same model; every bad input fails with a message naming the problem and the fix."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
import yaml

from s3prl_upstream.wavlm import (CheckpointError, ModelConfigError, StreamingWavLM, StreamingWavLMConfig,
                                  convert_wavlm_checkpoint, load_streaming_wavlm)
from s3prl_upstream.wavlm.checkpoint import TRUST_PICKLE_ENV

from .wavlm_helpers import TINY, RunsCodeWhenUnpickled, TrainingNote, relative_error, tiny_model


@pytest.fixture(scope="module")
def model() -> StreamingWavLM:
    return tiny_model(seed=3)


@pytest.fixture(scope="module")
def wav() -> torch.Tensor:
    torch.manual_seed(4)
    return torch.randn(1, 6000)


def outputs(model: StreamingWavLM, wav: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return model(wav)[0]


def assert_same_model(loaded: StreamingWavLM, reference: StreamingWavLM, wav: torch.Tensor) -> None:
    assert not loaded.training and loaded.config == reference.config
    for a, b in zip(outputs(loaded, wav), outputs(reference, wav)):
        assert torch.equal(a, b)


def write_yaml(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


# ----------------------------------------------------------------------------------- model configs
def test_config_round_trips_through_dict_and_yaml(tmp_path):
    cfg = StreamingWavLMConfig(**TINY)
    assert cfg.to_dict()["wavlm"]["hidden_dims"] == [32] * 7
    assert StreamingWavLMConfig.from_dict(cfg.to_dict()) == cfg
    assert StreamingWavLMConfig.from_yaml(write_yaml(tmp_path / "g.yaml", cfg.to_dict())) == cfg


def test_flat_student_keys_format(tmp_path):
    path = write_yaml(tmp_path / "distill.yaml", {
        "student_num_layers": 6, "student_dim": 768, "student_num_heads": 12, "student_dropout": 0.1,
        "student_causal": False, "student_lookahead": 1, "student_window": 256, "lr": 5e-5, "teacher": "wavlm"})
    cfg = StreamingWavLMConfig.from_yaml(path)
    assert (cfg.num_layers, cfg.dim, cfg.num_heads, cfg.dropout, cfg.causal, cfg.lookahead_size, cfg.window_size) == (
        6, 768, 12, 0.1, False, 1, 256)
    assert cfg.ffn_dim == 4096  # not in the flat format: our default


@pytest.mark.parametrize("data, match", [
    ({"wavlm": {"num_layer": 2}}, r"unknown key\(s\) \['num_layer'\] under `wavlm:`"),
    ({"student_layers": 2}, r"unknown key\(s\) \['student_layers'\]"),
    ({"lr": 1.0}, "no model config found"),
    ({"wavlm": {"num_layers": 2}, "student_num_layers": 3}, r"disagree on \['num_layers'\]"),
    ({"wavlm": {"dim": 100, "num_heads": 16}}, "not divisible by num_heads"),
    ({"wavlm": {"causal": "yes"}}, "'causal' must be true or false"),
    ({"wavlm": {"window_size": 2, "lookahead_size": 3}}, "shorter than one block"),
    ({"wavlm": {"hidden_dims": [512] * 6}}, "same length"),
    ({"wavlm": [1, 2]}, "must be a mapping"),
])
def test_bad_model_configs_are_refused_with_the_key(tmp_path, data, match):
    path = write_yaml(tmp_path / "bad.yaml", data)
    with pytest.raises(ModelConfigError, match=match) as info:
        StreamingWavLMConfig.from_yaml(path)
    assert "bad.yaml" in str(info.value)


def test_original_speed_knobs_are_accepted_and_ignored():
    cfg = StreamingWavLMConfig.from_dict({"wavlm": {**TINY, "max_cached_steps": 2048, "use_flex_attention": True}})
    assert cfg == StreamingWavLMConfig(**TINY)


def test_missing_or_invalid_yaml_files(tmp_path):
    with pytest.raises(ModelConfigError, match="does not exist"):
        StreamingWavLMConfig.from_yaml(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("wavlm: [unclosed")
    with pytest.raises(ModelConfigError, match="not valid YAML"):
        StreamingWavLMConfig.from_yaml(tmp_path / "broken.yaml")


# ------------------------------------------------------------------------- our checkpoint formats
def test_v002_state_dict_file_with_g_yaml(tmp_path, model, wav):
    torch.save(model.state_dict(), tmp_path / "student.pt")
    g = write_yaml(tmp_path / "g.yaml", model.config.to_dict())
    assert_same_model(load_streaming_wavlm(tmp_path / "student.pt", g), model, wav)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "_orig_mod.module."])
def test_prefixed_keys_in_student_state_dict(model, wav, prefix):
    ckpt = {"student_state_dict": {prefix + k: v for k, v in model.state_dict().items()}, "step": 10}
    assert_same_model(load_streaming_wavlm(ckpt, model.config), model, wav)


def test_v001_layout_is_converted(model, wav):
    old = {}
    for key, value in model.state_dict().items():
        if ".qkv_proj." in key:
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                old[key.replace("qkv_proj", name)] = part.clone()
        else:
            old[key] = value
    old["encoder.norm.weight"], old["encoder.norm.bias"] = torch.ones(64), torch.zeros(64)
    assert_same_model(load_streaming_wavlm(old, model.config), model, wav)


def test_embedded_model_config_needs_no_g_and_a_disagreeing_g_is_an_error(tmp_path, model, wav):
    ckpt = {"student_state_dict": model.state_dict(), "model_config": model.config.to_dict()}
    torch.save(ckpt, tmp_path / "distilled.pt")
    assert_same_model(load_streaming_wavlm(tmp_path / "distilled.pt"), model, wav)
    assert_same_model(load_streaming_wavlm(tmp_path / "distilled.pt", model.config.to_dict()), model, wav)
    g = write_yaml(tmp_path / "g.yaml", model.config.replace(lookahead_size=1).to_dict())
    with pytest.raises(ModelConfigError, match=r"disagrees with the config stored in .*distilled.pt.*lookahead_size: 1"):
        load_streaming_wavlm(tmp_path / "distilled.pt", g)


def test_missing_unexpected_and_misshaped_keys_are_listed(model):
    sd = dict(model.state_dict())
    del sd["encoder.layers.1.feed_forward.out_proj.bias"]
    sd["encoder.layers.1.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_streaming_wavlm(sd, model.config)
    message = str(info.value)
    assert "missing keys (1): encoder.layers.1.feed_forward.out_proj.bias" in message
    assert "unexpected keys (1): encoder.layers.1.extra.weight" in message
    with pytest.raises(CheckpointError) as info:  # right weights, wrong architecture in -g
        load_streaming_wavlm(model.state_dict(), model.config.replace(num_layers=3, dim=32))
    message = str(info.value)
    assert "shape mismatches" in message and "missing keys (15): encoder.layers.2." in message
    assert "pass a model config (-g)" in message and "num_layers: 2" in message and "dim: 64" in message


def test_unknown_prefix_is_named_in_the_fix(model):
    sd = {"student." + k: v for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="carry the prefix 'student.'"):
        load_streaming_wavlm(sd, model.config)


def test_files_that_are_not_checkpoints(tmp_path, model):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_streaming_wavlm(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_streaming_wavlm(tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match=r"no weights found. Top-level keys: epoch, optimizer"):
        load_streaming_wavlm({"optimizer": {}, "epoch": 3})
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_streaming_wavlm([1, 2])


# ------------------------------------------------------------------ pickled objects: weights only
def own_checkpoint(model: StreamingWavLM, **extra) -> dict:
    return {"student_state_dict": model.state_dict(), "model_config": model.config.to_dict(), **extra}


def test_checkpoint_that_would_run_code_is_refused_before_any_runs(tmp_path, model, monkeypatch):
    monkeypatch.delenv(TRUST_PICKLE_ENV, raising=False)
    marker = tmp_path / "code_ran"
    path = tmp_path / "downloaded.pt"
    torch.save(own_checkpoint(model, payload=RunsCodeWhenUnpickled(marker)), path)
    with pytest.raises(CheckpointError) as info:
        load_streaming_wavlm(path)
    assert not marker.exists()
    message = str(info.value)
    assert f"{path} contains pickled Python objects ({os.mkdir.__module__}.mkdir)" in message
    assert "could run code" in message and "Only if you trust where the file came from" in message
    assert "trust_pickle=True" in message and f"{TRUST_PICKLE_ENV}=1" in message and "plain state dict" in message
    # the refusal is all that stood between the file and its code: opting in runs it
    load_streaming_wavlm(path, trust_pickle=True)
    assert marker.is_dir()


@pytest.mark.parametrize("opt_in", ["argument", "environment"])
def test_trusted_pickled_checkpoint_loads_on_explicit_opt_in(tmp_path, model, wav, monkeypatch, opt_in):
    monkeypatch.delenv(TRUST_PICKLE_ENV, raising=False)
    path = tmp_path / "legacy.pt"
    torch.save(own_checkpoint(model, note=TrainingNote("saved by an old trainer")), path)
    with pytest.raises(CheckpointError, match=r"legacy.pt contains pickled Python objects \(.*TrainingNote\)"):
        load_streaming_wavlm(path)
    if opt_in == "argument":
        loaded = load_streaming_wavlm(path, trust_pickle=True)
    else:
        monkeypatch.setenv(TRUST_PICKLE_ENV, "1")
        loaded = load_streaming_wavlm(path)
    assert_same_model(loaded, model, wav)


def test_trust_variable_is_a_clear_yes_or_no(tmp_path, model, monkeypatch):
    path = tmp_path / "legacy.pt"
    torch.save(own_checkpoint(model, note=TrainingNote("saved by an old trainer")), path)
    monkeypatch.setenv(TRUST_PICKLE_ENV, "0")
    with pytest.raises(CheckpointError, match="contains pickled Python objects"):
        load_streaming_wavlm(path)
    monkeypatch.setenv(TRUST_PICKLE_ENV, "maybe")
    with pytest.raises(CheckpointError, match=f"{TRUST_PICKLE_ENV}='maybe': set it to 1"):
        load_streaming_wavlm(path)


# ------------------------------------------------------------------- Microsoft / s3prl WavLM format
MS_TINY_CFG = {
    "extractor_mode": "layer_norm", "layer_norm_first": True, "encoder_layers": 2, "encoder_embed_dim": 64,
    "encoder_ffn_embed_dim": 96, "encoder_attention_heads": 4, "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
    "conv_pos": 16, "conv_pos_groups": 4, "relative_position_embedding": True, "num_buckets": 32, "max_distance": 40,
    "gru_rel_pos": True, "normalize": False, "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
}


def s3prl_wavlm(cfg: dict):
    """A real s3prl WavLM with every parameter randomised (in eval mode)."""
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    torch.manual_seed(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # weight_norm deprecation inside s3prl
        ref = WavLM(WavLMConfig(cfg))
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name and name.endswith("weight")
                    else 0.3 * torch.randn_like(p))
    return ref.eval()


@pytest.fixture(scope="module")
def microsoft_large_style(tmp_path_factory):
    ref = s3prl_wavlm(MS_TINY_CFG)
    path = tmp_path_factory.mktemp("ms") / "WavLM-Tiny.pt"
    torch.save({"cfg": dict(MS_TINY_CFG), "model": ref.state_dict()}, path)
    return ref, path


def s3prl_layer_outputs(ref, wav: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of every transformer layer of s3prl's WavLM (before its final LayerNorm): [B, T, D] each."""
    with torch.no_grad():
        (_, layer_results), _ = ref.extract_features(wav, output_layer=len(ref.encoder.layers), ret_layer_results=True)
    return [x.transpose(0, 1) for x, _ in layer_results[1:]]


@pytest.mark.s3prl
def test_microsoft_checkpoint_matches_s3prl_wavlm_in_noncausal_mode(microsoft_large_style):
    ref, path = microsoft_large_style
    model = load_streaming_wavlm(path)
    assert model.config.causal is False and model.config.num_layers == 2
    torch.manual_seed(6)
    wav = torch.randn(2, 24000)  # 1.5 s: crosses a piece boundary of our front end
    expected = s3prl_layer_outputs(ref, wav)
    with torch.no_grad():
        ours, lengths = model(wav)
    assert lengths.tolist() == [74, 74]
    for layer, (a, b) in enumerate(zip(ours, expected)):
        assert a.shape == b.shape
        err = relative_error(a, b)
        assert err < 1e-5, f"layer {layer}: relative error {err:.2e}, max abs {float((a - b).abs().max()):.2e}"


@pytest.mark.s3prl
def test_microsoft_checkpoint_truncated_teacher_and_causal_student(microsoft_large_style):
    ref, path = microsoft_large_style
    ckpt = torch.load(path, weights_only=True)
    sd, cfg = convert_wavlm_checkpoint(ckpt, num_layers=1)
    teacher = StreamingWavLM(cfg).eval()
    teacher.load_state_dict(sd, strict=True)
    wav = torch.randn(1, 8000)
    with torch.no_grad():
        assert relative_error(teacher(wav)[0][0], s3prl_layer_outputs(ref, wav)[0]) < 1e-5
    # A causal student from the same weights: -g may set the streaming fields, not the weight shapes.
    student = load_streaming_wavlm(path, cfg.replace(num_layers=2, causal=True, window_size=16))
    assert student.config.causal and student.config.window_size == 16
    with pytest.raises(ModelConfigError, match="dim: 128"):
        load_streaming_wavlm(path, cfg.replace(num_layers=2, dim=128))


@pytest.mark.s3prl
@pytest.mark.parametrize("changes, reasons", [
    ({"extractor_mode": "default", "layer_norm_first": False}, ["GroupNorm", "post-LN"]),
    ({"layer_norm_first": False}, ["post-LN"]),
    ({"gru_rel_pos": False}, ["gated relative position bias"]),
])
def test_base_style_microsoft_checkpoints_are_refused(tmp_path, changes, reasons):
    cfg = {**MS_TINY_CFG, **changes}
    path = tmp_path / "WavLM-Base-style.pt"
    torch.save({"cfg": cfg, "model": s3prl_wavlm(cfg).state_dict()}, path)
    with pytest.raises(CheckpointError, match="cannot convert") as info:
        load_streaming_wavlm(path)
    assert all(r in str(info.value) for r in reasons) and "WavLM-Base-style.pt" in str(info.value)


@pytest.mark.s3prl
def test_microsoft_state_dict_mismatches_and_normalize_warning(microsoft_large_style):
    _, path = microsoft_large_style
    ckpt = torch.load(path, weights_only=True)
    broken = {"cfg": ckpt["cfg"], "model": {k: v for k, v in ckpt["model"].items() if "fc2.bias" not in k}}
    with pytest.raises(CheckpointError, match=r"missing encoder.layers.0.fc2.bias"):
        convert_wavlm_checkpoint(broken)
    extra = {"cfg": ckpt["cfg"], "model": {**ckpt["model"], "adapter.weight": torch.zeros(1)}}
    with pytest.raises(CheckpointError, match=r"unexpected adapter.weight"):
        convert_wavlm_checkpoint(extra)
    with pytest.warns(UserWarning, match="normalize: true"):
        convert_wavlm_checkpoint({"cfg": {**ckpt["cfg"], "normalize": True}, "model": ckpt["model"]})
