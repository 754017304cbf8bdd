"""Convolutional parts of the streaming WavLM: the waveform front end and the positional convolution.

Causal mode: every convolution left-pads ``kernel - 1`` inputs, replicating the first input value, so
output j of a layer with stride s ends at input j * s (frame t ends at sample 320 t; T = ceil(S / 320)).
Streaming keeps, per convolution, the inputs that later outputs still need (``pending``), so any split
of the input gives the one-shot result. Everything runs channels-last ([B, time, channels]).

Non-causal mode (offline teacher, same as Microsoft's WavLM): the front end is unpadded, frame t covers
samples [320 t, 320 t + 400) and T = floor((S - 400) / 320) + 1 (waveforms shorter than the receptive
field are zero-padded to it); the positional convolution zero-pads kernel // 2 on the left and
kernel - 1 - kernel // 2 on the right, so T frames map to T frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBlock(nn.Module):
    """Conv1d (no bias) -> LayerNorm over channels -> GELU. Keys: ``conv.weight``, ``norm.{weight,bias}``.

    Runs channels-last as patches @ weight: one matrix product, no transposes for the LayerNorm, and
    faster than Conv1d on CPU for both whole utterances and small streaming chunks.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: Tensor, pending: Tensor | None, causal: bool) -> tuple[Tensor, Tensor | None]:
        """x: [B, L, C_in] new inputs -> ([B, N, C_out] every output whose inputs have all arrived,
        pending [B, P, C_in] inputs later outputs still need). ``pending=None``: nothing seen yet."""
        kernel, stride = self.conv.kernel_size[0], self.conv.stride[0]
        if pending is None:
            if x.shape[1] == 0:
                return x.new_zeros(x.shape[0], 0, self.conv.out_channels), None
            # Causal: replicate the first value on the left. Non-causal: no padding at all.
            pending = x[:, :1].expand(-1, kernel - 1, -1) if causal else x[:, :0]
        x = torch.cat([pending, x], dim=1)
        num_out = (x.shape[1] - kernel) // stride + 1 if x.shape[1] >= kernel else 0
        pending = x[:, num_out * stride :]
        if num_out == 0:
            return x.new_zeros(x.shape[0], 0, self.conv.out_channels), pending
        patches = x.unfold(1, kernel, stride)[:, :num_out]  # [B, N, C_in, kernel]
        weight = self.conv.weight.reshape(self.conv.out_channels, -1)  # [C_out, C_in * kernel]
        y = F.linear(patches.reshape(x.shape[0], num_out, -1), weight)
        return F.gelu(self.norm(self.dropout(y))), pending


class FeatureExtractor(nn.Module):
    """Stack of ConvBlocks from waveform to 20 ms frames (keys ``layers.{i}.*``)."""

    PIECE_SAMPLES = 16000

    def __init__(self, hidden_dims: tuple[int, ...], kernel_sizes: tuple[int, ...], strides: tuple[int, ...],
                 dropout: float) -> None:
        super().__init__()
        in_dims = (1,) + tuple(hidden_dims[:-1])
        self.layers = nn.ModuleList(
            ConvBlock(i, o, k, s, dropout) for i, o, k, s in zip(in_dims, hidden_dims, kernel_sizes, strides))

    def forward(self, wav: Tensor, pending: list[Tensor | None] | None, causal: bool
                ) -> tuple[Tensor, list[Tensor | None]]:
        """wav: [B, S] new samples -> ([B, T, C] new frames, per-layer pending inputs). ``pending=None``: start.

        Runs in pieces of PIECE_SAMPLES: the same result with small intermediates, ~30% faster on CPU than
        one pass over a long utterance.
        """
        pending = list(pending) if pending is not None else [None] * len(self.layers)
        frames = []
        for start in range(0, wav.shape[1], self.PIECE_SAMPLES):
            x = wav[:, start : start + self.PIECE_SAMPLES].unsqueeze(-1)
            for i, layer in enumerate(self.layers):
                x, pending[i] = layer(x, pending[i], causal)
            frames.append(x)
        if not frames:
            return wav.new_zeros(wav.shape[0], 0, self.layers[-1].conv.out_channels), pending
        return (frames[0] if len(frames) == 1 else torch.cat(frames, dim=1)), pending


class PositionalConv(nn.Module):
    """Grouped Conv1d + GELU whose output is added to the frames (key ``conv.{weight,bias}``, no weight norm)."""

    # oneDNN's grouped convolution has a large fixed cost per call (~ tens of frames' worth with the
    # 128-tap, 16-group default); up to this many output frames (summed over the batch) one batched
    # matrix product is faster.
    SMALL_INPUT_FRAMES = 64

    def __init__(self, dim: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size, groups=groups)

    def forward(self, x: Tensor, pending: Tensor | None, causal: bool) -> tuple[Tensor, Tensor | None]:
        """x: [B, T, D] -> ([B, T, D] positional term, pending [B, kernel - 1, D] last frames seen)."""
        kernel = self.conv.kernel_size[0]
        if x.shape[1] == 0:
            return x, pending
        if causal:
            if pending is None:  # stream start: replicate the first frame
                pending = x[:, :1].expand(-1, kernel - 1, -1)
            x = torch.cat([pending, x], dim=1)
            pending = x[:, x.shape[1] - (kernel - 1) :]
        else:
            x = F.pad(x, (0, 0, kernel // 2, kernel - 1 - kernel // 2))
        return F.gelu(self._valid_conv(x)), pending

    def _valid_conv(self, x: Tensor) -> Tensor:
        """Unpadded grouped convolution along time, channels-last: [B, L, D] -> [B, L - kernel + 1, D]."""
        batch, length, dim = x.shape
        kernel, groups = self.conv.kernel_size[0], self.conv.groups
        frames, group_dim = length - kernel + 1, dim // groups
        if batch * frames > self.SMALL_INPUT_FRAMES:
            return self.conv(x.transpose(1, 2)).transpose(1, 2)
        # Time last, so each patch row gathers contiguous runs of `kernel` frames (a strided gather along
        # time is twice as slow): patches [G, B * T, group_dim * kernel] @ weight^T [G, group_dim * kernel, group_dim].
        time_last = x.view(batch, length, groups, group_dim).permute(2, 0, 3, 1).contiguous()  # [G, B, gd, L]
        patches = time_last.unfold(3, kernel, 1).transpose(2, 3).reshape(groups, batch * frames, group_dim * kernel)
        weight = self.conv.weight.view(groups, group_dim, group_dim * kernel).transpose(1, 2)
        y = torch.baddbmm(self.conv.bias.view(groups, 1, group_dim), patches, weight)
        return y.view(groups, batch, frames, group_dim).permute(1, 2, 0, 3).reshape(batch, frames, dim)
