"""NeMo's Conformer convolution module with a channels-last streaming path, for cheap small chunks.

A streaming step gives each convolution module 1-20 new frames. NeMo's forward transposes to
channels-first and runs three ``Conv1d`` calls (pointwise, depthwise, pointwise); on CPU each call
costs ~90 us whatever the input size (oneDNN's set-up), three times the arithmetic of the whole
module at 1 frame. This subclass changes only the streaming path (``cache`` given): pointwise
convolutions are matrix products on channels-last frames, and the depthwise convolution is a
weighted sum over the ``kernel`` latest frames (cache + new). Same numbers up to float rounding;
same cache layout and update as NeMo's ``CausalConv1D.update_cache`` ((B, D, K-1), keeping the last
K-1 inputs before ``cache_drop_size`` trailing ones). Without a cache (the offline forward) the
module is NeMo's unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from nemo.collections.asr.parts.submodules.conformer_modules import ConformerConvolution

from .class_swap import swap_class


class ChannelsLastStreamingConvolution(ConformerConvolution):
    """``ConformerConvolution`` with a channels-last streaming path (see the module doc)."""

    def forward(self, x, pad_mask=None, cache=None):
        if cache is None:
            return super().forward(x, pad_mask=pad_mask, cache=cache)
        # x: (B, T, D) new frames; cache: (B, D', K-1) last depthwise inputs (D' = D, or 2D before GLU).
        x = F.linear(x, self.pointwise_conv1.weight[:, :, 0], self.pointwise_conv1.bias)
        x = F.glu(x, dim=-1) if self.pointwise_activation == "glu_" else self.pointwise_activation(x)
        if pad_mask is not None:
            x = x.masked_fill(pad_mask.unsqueeze(-1), 0.0)
        x, cache = self._depthwise(x, cache)
        if self.norm_type == "layer_norm":
            x = self.batch_norm.forward(x)
        else:  # the other norms work channels-first
            x = self.batch_norm.forward(x.transpose(1, 2)).transpose(1, 2)
        x = self.activation.forward(x)
        return F.linear(x, self.pointwise_conv2.weight[:, :, 0], self.pointwise_conv2.bias), cache

    def _depthwise(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D') -> (B, T + right padding, D') and the next cache (B, D', K-1)."""
        conv = self.depthwise_conv
        kernel = conv.kernel_size[0]
        if conv._right_padding:
            x = F.pad(x, (0, 0, 0, conv._right_padding))
        window = torch.cat([cache.transpose(1, 2), x], dim=1)  # (B, K-1+T', D')
        drop = conv.cache_drop_size or 0
        next_cache = window[:, : window.shape[1] - drop][:, -cache.shape[2] :].transpose(1, 2)
        taps = window.unfold(1, kernel, 1)  # (B, T', D', K)
        y = (taps * conv.weight[:, 0]).sum(-1)
        if conv.bias is not None:
            y = y + conv.bias
        return y, next_cache


def use_channels_last_convolution(encoder) -> None:
    """Give the encoder's convolution modules the channels-last streaming path (offline forward unchanged).

    The class swap keeps parameters, state-dict keys and the offline forward as they are.
    """
    swap_class([layer.conv for layer in encoder.layers], ConformerConvolution, ChannelsLastStreamingConvolution)
