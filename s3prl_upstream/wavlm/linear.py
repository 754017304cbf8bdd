"""A Linear layer that multiplies few rows fast on CPU (streaming steps) with a prepacked weight.

MKL's GEMM, which ``F.linear`` uses on CPU, repacks the whole weight on every call. With the 4-40 rows of a
streaming step (a 400 ms chunk is 20 frames) that repacking costs as much as the arithmetic: a
1024 -> 4096 product of 20 rows runs at half the speed per row of a whole utterance's. oneDNN can pack a
weight once and reuse it: 1.5x (20 rows) to 3.8x (4 rows) faster on this AVX2 CPU, provided the
contraction is at most ~2048 long (a 4096 -> 1024 product of 20 rows is slower than MKL's in one piece,
1.5x faster in two). The packed copy costs the weight's memory again, is built on first use only, and is
rebuilt when the weight changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PrepackedLinear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys) that, for inference on CPU in float32 with at most
    ``max_prepacked_rows`` rows, multiplies by a oneDNN-prepacked copy of its weight.

    Results differ from ``F.linear`` only by float rounding (~1e-7 relative). ``max_prepacked_rows = 0``
    turns the fast path off. Anything else (autograd, GPU, other dtypes, many rows) runs ``F.linear``.
    """

    MAX_CONTRACTION = 2048  # input features per packed piece

    def __init__(self, in_features: int, out_features: int, bias: bool = True, max_prepacked_rows: int = 64) -> None:
        super().__init__(in_features, out_features, bias)
        self.max_prepacked_rows = max_prepacked_rows
        self._packed: tuple[tuple[int, int], list[Tensor]] | None = None  # (data pointer, version), pieces

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
