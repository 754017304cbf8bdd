"""Few-row linear products on CPU, for streaming inference of both models.

A streaming step multiplies only one chunk's frames (1-40 rows per stream) by each weight matrix. MKL's GEMM,
which ``F.linear`` uses on CPU, repacks the whole weight at every call, and with so few rows the repacking
costs as much as the arithmetic: a 1024 -> 4096 product of 20 rows runs at half the speed per row of a whole
utterance's. oneDNN packs a weight once and reuses it: 1.5x (20 rows) to 3.8x (4 rows) faster per product
on an AVX2 CPU, provided the contraction is at most ~2048 long (longer ones are split and summed). The
packed copy costs the weight's memory again, is built on first use only and rebuilt when the weight changes.

The models are plain ``nn.Linear`` (training included); :func:`use_fast_cpu_linears` gives an inference model
this path: the streaming NEST runner on its own copy of the model, ``load_streaming_wavlm`` on what it loads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FewRowCPULinear(nn.Linear):
    """An ``nn.Linear`` (same parameters and state-dict keys) that, for inference on CPU in float32 with at most
    ``max_prepacked_rows`` rows, multiplies by a oneDNN-prepacked copy of its weight.

    Made from an existing ``nn.Linear`` by :func:`use_fast_cpu_linears`. Results differ from ``F.linear`` only
    by float rounding (~1e-7 relative). Anything else (autograd, GPU, other dtypes, more rows) runs ``F.linear``.
    """

    MAX_CONTRACTION = 2048  # input features per packed piece
    max_prepacked_rows: int
    _packed: tuple[tuple[int, int], list[Tensor]] | None  # ((weight data pointer, version), packed pieces)

    def forward(self, x: Tensor) -> Tensor:
        if not self._use_packed(x):
            return F.linear(x, self.weight, self.bias)
        # Both values change when the weight does: in-place updates bump the version, .to() moves the data.
        key = (self.weight.data_ptr(), self.weight._version)
        if self._packed is None or self._packed[0] != key:
            self._packed = key, [torch.ops.mkldnn._reorder_linear_weight(piece.contiguous(), self.max_prepacked_rows)
                                 for piece in self.weight.detach().split(self.MAX_CONTRACTION, dim=1)]
        (first, *rest), packed = x.split(self.MAX_CONTRACTION, dim=-1), self._packed[1]
        bias = None if self.bias is None else self.bias.detach()
        y = torch.ops.mkldnn._linear_pointwise(first, packed[0], bias, "none", [], "")
        for x_piece, weight_piece in zip(rest, packed[1:]):
            y = y + torch.ops.mkldnn._linear_pointwise(x_piece, weight_piece, None, "none", [], "")
        return y

    def _use_packed(self, x: Tensor) -> bool:
        grad = torch.is_grad_enabled() and (self.weight.requires_grad or x.requires_grad)
        return (not grad and x.device.type == "cpu" and x.dtype == self.weight.dtype == torch.float32
                and 0 < x.numel() // self.in_features <= self.max_prepacked_rows
                and self.weight.device.type == "cpu" and torch.backends.mkldnn.is_available())

    def __getstate__(self) -> dict:
        # oneDNN tensors cannot be copied or pickled; the packed weight is rebuilt on demand anyway.
        return {**self.__dict__, "_packed": None}


def use_fast_cpu_linears(module: nn.Module, max_prepacked_rows: int = 64) -> int:
    """Give every plain ``nn.Linear`` inside ``module`` the few-row CPU path, in place (a class swap: parameters,
    state-dict keys and every other result stay as they are). ``max_prepacked_rows=0`` turns the path off.
    Returns how many layers have it."""
    count = 0
    for layer in module.modules():
        if type(layer) is nn.Linear:
            layer.__class__ = FewRowCPULinear
            layer._packed = None
        if isinstance(layer, FewRowCPULinear):
            layer.max_prepacked_rows = max_prepacked_rows
            count += 1
    return count
