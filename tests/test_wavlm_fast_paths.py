"""The streaming WavLM's CPU fast paths compute what the plain operations compute.

PrepackedLinear (oneDNN-prepacked weight for few rows) against F.linear, including the split contraction
and weight changes; KVCache (preallocated, compacted buffers) against plain concatenation.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F

from s3prl_upstream.wavlm.encoder import KVCache
from s3prl_upstream.wavlm.linear import PrepackedLinear

from .wavlm_helpers import relative_error, tiny_model

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN not built into torch")


@pytest.mark.parametrize("in_features", [16, 2048, 4100])  # one piece, exactly one, three uneven pieces
@pytest.mark.parametrize("rows", [1, 7, 64])
def test_prepacked_linear_equals_linear(in_features, rows):
    torch.manual_seed(0)
    layer = PrepackedLinear(in_features, 24)
    x = torch.randn(2, rows // 2 or 1, in_features) if rows > 1 else torch.randn(rows, in_features)
    with torch.no_grad():
        y, expected = layer(x), F.linear(x, layer.weight, layer.bias)
    assert layer._packed is not None, "the prepacked path was not taken"
    assert len(layer._packed[1]) == -(-in_features // PrepackedLinear.MAX_CONTRACTION)
    assert y.shape == (*x.shape[:-1], 24)
    assert relative_error(y, expected) < 1e-5


def test_prepacked_linear_follows_weight_changes():
    torch.manual_seed(0)
    layer, x = PrepackedLinear(32, 8), torch.randn(4, 32)
    with torch.no_grad():
        layer(x)
        layer.weight.mul_(2.0)  # in place: same storage, new version
        assert relative_error(layer(x), F.linear(x, layer.weight, layer.bias)) < 1e-5
        layer.load_state_dict({"weight": torch.randn(8, 32), "bias": torch.zeros(8)})
        assert relative_error(layer(x), F.linear(x, layer.weight, layer.bias)) < 1e-5


def test_prepacked_linear_keeps_autograd_and_large_inputs_on_the_plain_path():
    layer = PrepackedLinear(32, 8, max_prepacked_rows=4)
    layer(torch.randn(3, 32)).sum().backward()  # grad enabled: plain F.linear, gradients flow
    assert layer.weight.grad is not None and layer._packed is None
    with torch.no_grad():
        layer(torch.randn(5, 32))  # more rows than max_prepacked_rows
    assert layer._packed is None
    off = PrepackedLinear(32, 8, max_prepacked_rows=0)
    with torch.no_grad():
        off(torch.randn(1, 32))
    assert off._packed is None


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


def reference_append(history: torch.Tensor, new: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    everything = torch.cat([history, new], dim=2)
    return everything, everything[:, :, max(0, everything.shape[2] - keep):]


def test_kv_cache_equals_concatenation_through_compaction_and_growth():
    """Steps of 1..40 frames with a keep of 10: buffers get compacted (overlapping move) and regrown."""
    steps = [1, 3] + [1] * 20 + [40] * 10 + [2, 7]
    torch.manual_seed(0)
    keep, cache = 10, KVCache(10)
    keys_history, values_history = torch.zeros(2, 3, 0, 4), torch.zeros(2, 3, 0, 4)
    compactions, capacities = 0, set()
    for step, new in enumerate(steps):
        keys, values = torch.randn(2, 3, new, 4), torch.randn(2, 3, new, 4)
        start_before = cache.start
        got_keys, got_values = cache.append(keys, values)
        compactions += cache.start < start_before
        capacities.add(cache.keys.shape[2])
        want_keys, keys_history = reference_append(keys_history, keys, keep)
        want_values, values_history = reference_append(values_history, values, keep)
        assert torch.equal(got_keys, want_keys) and torch.equal(got_values, want_values), f"step {step}"
        assert cache.frames == keys_history.shape[2]
    assert compactions >= 2 and len(capacities) >= 2  # both the move and the regrowth were exercised
    picked = cache.select([1])
    assert torch.equal(picked.append(keys[1:], values[1:])[0], torch.cat([keys_history[1:], keys[1:]], dim=2))
