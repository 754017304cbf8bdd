"""Convolutional parts of the streaming WavLM: the waveform front end and the positional convolution.

Causal mode: every convolution left-pads ``kernel - 1`` inputs, replicating the first input value, so
output j of a layer with stride s ends at input j * s (frame t ends at sample 320 t; T = ceil(S / 320)).
Streaming keeps, per convolution, the inputs that later outputs still need (``pending``), so any split
of the input gives the one-shot result.

Non-causal mode (offline teacher, same as Microsoft's WavLM): the front end is unpadded, frame t covers
samples [320 t, 320 t + 400) and T = floor((S - 400) / 320) + 1 (waveforms shorter than the receptive
field are zero-padded to it); the positional convolution zero-pads kernel // 2 on the left and
kernel - 1 - kernel // 2 on the right, so T frames map to T frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def causal_conv_step(conv: nn.Conv1d, x: Tensor, pending: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Run a causal strided convolution on newly arrived inputs.

    x: [B, C_in, L] new inputs. pending: [B, C_in, P] inputs kept from earlier calls, or None before the
    first input (then the first value is replicated ``kernel - 1`` times on the left).
    Returns ([B, C_out, N] every output whose inputs have all arrived, the new pending inputs).
    """
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    if pending is None:
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], conv.out_channels, 0), None
        pending = x[..., :1].expand(-1, -1, kernel - 1)
    inputs = torch.cat([pending, x], dim=-1)
    num_out = (inputs.shape[-1] - kernel) // stride + 1 if inputs.shape[-1] >= kernel else 0
    if num_out == 0:
        return x.new_zeros(x.shape[0], conv.out_channels, 0), inputs
    y = conv(inputs[..., : (num_out - 1) * stride + kernel])
    return y, inputs[..., num_out * stride :]


class ConvBlock(nn.Module):
    """Conv1d (no bias) -> LayerNorm over channels -> GELU. Keys: ``conv.weight``, ``norm.{weight,bias}``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: Tensor, pending: Tensor | None, causal: bool) -> tuple[Tensor, Tensor | None]:
        """x: [B, C_in, L] -> ([B, C_out, N], pending). Non-causal: unpadded convolution, pending stays None."""
        y, pending = causal_conv_step(self.conv, x, pending) if causal else (self.conv(x), None)
        y = self.norm(self.dropout(y).transpose(1, 2))
        return F.gelu(y).transpose(1, 2), pending


class FeatureExtractor(nn.Module):
    """Stack of ConvBlocks from waveform to 20 ms frames (keys ``layers.{i}.*``)."""

    def __init__(self, hidden_dims: tuple[int, ...], kernel_sizes: tuple[int, ...], strides: tuple[int, ...],
                 dropout: float) -> None:
        super().__init__()
        in_dims = (1,) + tuple(hidden_dims[:-1])
        self.layers = nn.ModuleList(
            ConvBlock(i, o, k, s, dropout) for i, o, k, s in zip(in_dims, hidden_dims, kernel_sizes, strides))

    def forward(self, wav: Tensor, pending: list[Tensor | None] | None, causal: bool
                ) -> tuple[Tensor, list[Tensor | None]]:
        """wav: [B, S] -> ([B, T, C] frames, per-layer pending inputs). ``pending=None``: start of a stream."""
        x = wav.unsqueeze(1)
        pending = pending if pending is not None else [None] * len(self.layers)
        new_pending = []
        for layer, layer_pending in zip(self.layers, pending):
            x, layer_pending = layer(x, layer_pending, causal)
            new_pending.append(layer_pending)
        return x.transpose(1, 2), new_pending


class PositionalConv(nn.Module):
    """Grouped Conv1d + GELU whose output is added to the frames (key ``conv.{weight,bias}``, no weight norm)."""

    def __init__(self, dim: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size, groups=groups)

    def forward(self, x: Tensor, pending: Tensor | None, causal: bool) -> tuple[Tensor, Tensor | None]:
        """x: [B, T, D] -> ([B, T, D] positional term, pending)."""
        x = x.transpose(1, 2)
        if causal:
            y, pending = causal_conv_step(self.conv, x, pending)
        elif x.shape[-1] == 0:
            y = x
        else:
            kernel = self.conv.kernel_size[0]
            y = self.conv(F.pad(x, (kernel // 2, kernel - 1 - kernel // 2)))
        return F.gelu(y).transpose(1, 2), pending
