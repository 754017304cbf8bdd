"""The channels-last streaming path of the Conformer convolution module computes NeMo's numbers."""

from __future__ import annotations

import pytest
import torch
from nemo.collections.asr.parts.submodules.conformer_modules import ConformerConvolution

from nemo_streaming_ssl.streaming.convolution import ChannelsLastStreamingConvolution


def nemo_and_ours(norm_type: str, conv_context_size, cache_drop_size: int):
    torch.manual_seed(0)
    nemo = ConformerConvolution(d_model=12, kernel_size=5, norm_type=norm_type, conv_context_size=conv_context_size).eval()
    nemo.depthwise_conv.cache_drop_size = cache_drop_size
    if norm_type == "batch_norm":  # non-trivial statistics
        nemo.batch_norm.running_mean.normal_()
        nemo.batch_norm.running_var.uniform_(0.5, 2.0)
    ours = ChannelsLastStreamingConvolution(d_model=12, kernel_size=5, norm_type=norm_type, conv_context_size=conv_context_size)
    ours.load_state_dict(nemo.state_dict())
    ours.depthwise_conv.cache_drop_size = cache_drop_size
    return nemo, ours.eval()


@pytest.mark.parametrize(
    "norm_type,conv_context_size,cache_drop_size",
    [("layer_norm", [4, 0], 0), ("batch_norm", [4, 0], 0), ("layer_norm", [3, 1], 1), ("layer_norm", [4, 0], 2)],
)
@pytest.mark.parametrize("frames", [1, 3, 9])
def test_streaming_path_equals_nemo(norm_type, conv_context_size, cache_drop_size, frames):
    nemo, ours = nemo_and_ours(norm_type, conv_context_size, cache_drop_size)
    x, cache = torch.randn(2, frames, 12), torch.randn(2, 12, 4)
    pad_mask = torch.zeros(2, frames, dtype=torch.bool)
    pad_mask[1, frames - 1 :] = True  # the second stream's last frame is padding
    with torch.no_grad():
        want, want_cache = nemo(x, pad_mask=pad_mask, cache=cache)
        got, got_cache = ours(x, pad_mask=pad_mask, cache=cache)
        assert torch.allclose(ours(x, pad_mask=pad_mask), nemo(x, pad_mask=pad_mask))  # offline: NeMo's own forward
    assert got.shape == want.shape and (got - want).abs().max() < 1e-5
    assert got_cache.shape == want_cache.shape and (got_cache - want_cache).abs().max() < 1e-5
