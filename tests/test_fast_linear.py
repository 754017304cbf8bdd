"""The few-row CPU linear path (FewRowCPULinear), shared by both models' streaming inference, computes what
F.linear computes, follows weight changes, stays off for training, and is given to inference models only."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nemo_streaming_ssl.core.fast_linear import FewRowCPULinear, use_fast_cpu_linears
from s3prl_upstream.wavlm import StreamingWavLM, load_streaming_wavlm

from .wavlm_helpers import relative_error, tiny_config, tiny_model

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN not built into torch")


def fast_linear(in_features: int, out_features: int, max_prepacked_rows: int = 64, prepack_min_elements: int = 0
                ) -> nn.Linear:
    """A layer with the path; by default every weight size takes the oneDNN part (small sizes keep tests fast)."""
    layer = nn.Linear(in_features, out_features)
    assert use_fast_cpu_linears(layer, max_prepacked_rows, prepack_min_elements) == 1
    assert type(layer) is FewRowCPULinear and layer.weight.stride() == (1, out_features)  # input-major
    return layer


@pytest.mark.parametrize("in_features", [16, 2048, 4100])  # one piece, exactly one, three uneven pieces
@pytest.mark.parametrize("rows", [1, 7, 64])
def test_few_row_linear_equals_linear(in_features, rows):
    torch.manual_seed(0)
    layer = fast_linear(in_features, 24)
    x = torch.randn(2, rows // 2 or 1, in_features) if rows > 1 else torch.randn(rows, in_features)
    with torch.no_grad():
        y, expected = layer(x), F.linear(x, layer.weight, layer.bias)
    assert layer._packed is not None, "the prepacked path was not taken"
    assert len(layer._packed[1]) == -(-in_features // FewRowCPULinear.MAX_CONTRACTION)
    assert y.shape == (*x.shape[:-1], 24)
    assert relative_error(y, expected) < 1e-5


def test_few_row_linear_follows_weight_changes():
    torch.manual_seed(0)
    layer, x = fast_linear(32, 8), torch.randn(4, 32)
    with torch.no_grad():
        layer(x)
        layer.weight.mul_(2.0)  # in place: same storage, new version
        assert relative_error(layer(x), F.linear(x, layer.weight, layer.bias)) < 1e-5
        layer.load_state_dict({"weight": torch.randn(8, 32), "bias": torch.zeros(8)})
        assert relative_error(layer(x), F.linear(x, layer.weight, layer.bias)) < 1e-5


def test_few_row_linear_keeps_autograd_and_large_inputs_on_the_plain_path():
    layer = fast_linear(32, 8, max_prepacked_rows=4)
    layer(torch.randn(3, 32)).sum().backward()  # grad enabled: plain F.linear, gradients flow
    assert layer.weight.grad is not None and layer._packed is None
    with torch.no_grad():
        layer(torch.randn(5, 32))  # more rows than max_prepacked_rows
    assert layer._packed is None
    off = fast_linear(32, 8, max_prepacked_rows=0)
    with torch.no_grad():
        off(torch.randn(1, 32))
    assert off._packed is None


def test_small_weights_stay_on_input_major_f_linear():
    """Below prepack_min_elements (the default keeps NEST's presets up to large there): input-major F.linear."""
    torch.manual_seed(0)
    layer, x = nn.Linear(176, 704), torch.randn(5, 176)
    with torch.no_grad():
        expected = F.linear(x, layer.weight, layer.bias)
        use_fast_cpu_linears(layer)
        y = layer(x)
    assert layer._packed is None and layer.weight.stride() == (1, 704)
    assert relative_error(y, expected) < 1e-6


def test_model_with_packed_weights_copies_and_saves():
    model = tiny_model()
    wav = torch.randn(1, 3200)
    with torch.no_grad():
        expected = model(wav)[0][-1]
    assert model.feature_proj._packed is not None
    twin = copy.deepcopy(model)
    torch.save(model, io.BytesIO())
    with torch.no_grad():
        assert torch.equal(twin(wav)[0][-1], expected)


def test_only_inference_models_get_the_fast_path(tmp_path):
    """The WavLM as built (what distillation trains) is plain torch; load_streaming_wavlm's model has the path."""
    model = StreamingWavLM(tiny_config())
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is nn.Linear for m in linears)
    path = tmp_path / "student.pt"
    torch.save({"student_state_dict": model.state_dict(), "model_config": tiny_config().to_dict()}, path)
    loaded = load_streaming_wavlm(path)
    assert [type(m) for m in loaded.modules() if isinstance(m, nn.Linear)] == [FewRowCPULinear] * len(linears)
    assert loaded.state_dict().keys() == model.state_dict().keys()
