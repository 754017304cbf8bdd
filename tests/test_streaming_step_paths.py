"""The lean streaming paths compute NeMo's numbers: the Conformer layer's streaming step (the key/value
window itself is tested in test_kv_window.py)."""

from __future__ import annotations

import pytest
import torch
from nemo.collections.asr.parts.submodules.conformer_modules import ConformerLayer
from nemo.collections.common.parts.adapter_modules import LinearAdapterConfig
from omegaconf import OmegaConf

from nemo_streaming_ssl.core.fast_linear import FewRowCPULinear
from nemo_streaming_ssl.streaming import StreamingEncoderRunner
from nemo_streaming_ssl.streaming.attention import prepare_position_tables, use_key_value_cache
from nemo_streaming_ssl.streaming.convolution import use_channels_last_convolution
from nemo_streaming_ssl.streaming.layer import LeanStreamingConformerLayer, use_lean_streaming_layers
from nemo_streaming_ssl.streaming.untrained import untrained_model
from tests.streaming_helpers import MODES


def cached_encoder(mode: str):
    """A tiny streaming encoder with the runner's attention and convolution swaps."""
    torch.manual_seed(0)
    encoder = untrained_model(MODES[mode]).encoder
    attention = use_key_value_cache(encoder)
    use_channels_last_convolution(encoder)
    prepare_position_tables(encoder, attention, 64)
    return encoder


def random_caches(encoder, batch: int, cached: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer step's attention cache (B, heads, cached, 2 d_head) and convolution cache (B, D, K-1)."""
    layer = encoder.layers[0]
    return (
        torch.randn(batch, layer.self_attn.h, cached, 2 * layer.self_attn.d_k),
        torch.randn(batch, encoder.d_model, layer.conv.depthwise_conv.kernel_size[0] - 1),
    )


@pytest.mark.parametrize("mode,frames", [("causal", 1), ("left_context_lookahead", 4)])
def test_lean_layer_equals_nemo_layer(mode, frames):
    """Same caches in, same output and caches out as NeMo's ConformerLayer.forward, padded frames included."""
    encoder = cached_encoder(mode)
    use_lean_streaming_layers(encoder)
    layer = encoder.layers[0]
    assert type(layer) is LeanStreamingConformerLayer
    cached = 6
    x = torch.randn(2, frames, encoder.d_model)
    _, pos_emb = encoder.pos_enc(x=x, cache_len=cached)
    att_mask = torch.zeros(2, frames, cached + frames, dtype=torch.bool)
    att_mask[1, :, :2] = True  # the second stream has only 4 cached frames
    pad_mask = torch.zeros(2, frames, dtype=torch.bool)
    pad_mask[1, -1] = True
    att_cache, conv_cache = random_caches(encoder, 2, cached)
    inputs = dict(x=x, att_mask=att_mask, pos_emb=pos_emb, pad_mask=pad_mask, cache_last_channel=att_cache,
                  cache_last_time=conv_cache)
    with torch.no_grad():
        want = ConformerLayer.forward(layer, **inputs)
        got = layer(**inputs)
    for g, w in zip(got, want):
        assert g.shape == w.shape and (g - w).abs().max() < 1e-5


def test_layers_with_adapters_keep_nemo_path():
    """An adapter changes what a layer computes: such layers are left to NeMo's forward, which runs it."""
    encoder = cached_encoder("causal")
    encoder.layers[1].add_adapter("extra", OmegaConf.structured(LinearAdapterConfig(in_features=encoder.d_model, dim=4)))
    use_lean_streaming_layers(encoder)
    assert type(encoder.layers[0]) is LeanStreamingConformerLayer
    assert type(encoder.layers[1]) is ConformerLayer


def test_training_mode_uses_nemo_path():
    """Dropout only exists on NeMo's path: in train mode the lean layer defers to it (outputs vary per call)."""
    encoder = cached_encoder("causal")
    use_lean_streaming_layers(encoder)
    layer = encoder.layers[0]
    for module in layer.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    layer.train()
    x = torch.randn(1, 3, encoder.d_model)
    _, pos_emb = encoder.pos_enc(x=x, cache_len=2)
    att_cache, conv_cache = random_caches(encoder, 1, 2)
    with torch.no_grad():
        first, second = (layer(x, None, pos_emb, None, att_cache, conv_cache)[0] for _ in range(2))
    assert not torch.allclose(first, second)


def test_access_enabled_uses_nemo_path():
    """With NeMo's AccessMixin enabled, the layer registers its output as NeMo's forward does."""
    encoder = cached_encoder("causal")
    use_lean_streaming_layers(encoder)
    layer = encoder.layers[0]
    x = torch.randn(1, 2, encoder.d_model)
    _, pos_emb = encoder.pos_enc(x=x, cache_len=2)
    att_cache, conv_cache = random_caches(encoder, 1, 2)
    layer.update_access_cfg({"save_encoder_tensors": True}, guid=getattr(layer, "model_guid", None))
    layer.set_access_enabled(access_enabled=True, guid=getattr(layer, "model_guid", None))
    try:
        with torch.no_grad():
            out = layer(x, None, pos_emb, None, att_cache, conv_cache)[0]
        saved = [t for entry in layer.get_module_registry(encoder).values() for t in entry.get("encoder", [])]
    finally:
        layer.set_access_enabled(access_enabled=False, guid=getattr(layer, "model_guid", None))
        layer.reset_registry()
    assert len(saved) == 1 and torch.equal(saved[0], out)


def test_runner_gives_its_copy_fast_cpu_linears_and_keeps_the_model():
    """The runner gives every Linear of its copy the few-row CPU path (FewRowCPULinear): same values,
    state-dict keys and offline forward as the caller's model, which keeps plain nn.Linear."""
    torch.manual_seed(0)
    model = untrained_model(MODES["causal"])
    state = {key: value.clone() for key, value in model.state_dict().items()}
    features = torch.randn(1, model.encoder._feat_in, 48)
    with torch.no_grad():
        before, _ = model.encoder(audio_signal=features, length=torch.tensor([48]))
        runner = StreamingEncoderRunner(model)
        after, _ = model.encoder(audio_signal=features, length=torch.tensor([48]))
        copied, _ = runner.encoder(audio_signal=features, length=torch.tensor([48]))
    linears = [m for m in runner.encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(type(m) is FewRowCPULinear for m in linears)
    assert all(type(m) is torch.nn.Linear for m in model.encoder.modules() if isinstance(m, torch.nn.Linear))
    runner_state = runner.encoder.state_dict()
    assert runner_state.keys() == {k.removeprefix("encoder.") for k in state if k.startswith("encoder.")}
    assert all(torch.equal(state[f"encoder.{key}"], value) for key, value in runner_state.items())
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())
    assert torch.equal(after, before) and (copied - before).abs().max() < 1e-5
