"""Few-row linear products on CPU, for streaming inference of both models.

A streaming step multiplies only one chunk's frames (1-40 rows per stream) by each weight matrix. MKL's GEMM,
which ``F.linear`` uses on CPU, repacks a row-major (out, in) weight at every call, and with so few rows the
repacking costs as much as the arithmetic. Two remedies, each where it wins (measured end to end, 1 thread):

* every weight is stored input-major (same parameter, values and state-dict entry; only its strides change),
  so that W^T is a plain row-major matrix that GEMM need not repack: NEST's small preset streams 1.3-1.4x faster
  this way than with the oneDNN path below, its large one 1.08-1.13x;
* weights of at least ``PREPACK_MIN_ELEMENTS`` elements (the streaming WavLM's 1024 x 3072 and 1024 x 4096
  products) multiply few rows by a oneDNN-prepacked copy instead: a 6 x 1024 WavLM streams 80 ms and 400 ms
  chunks 1.2x faster than with input-major weights (and as fast as with every weight prepacked, within 2%).
  oneDNN's fixed cost per call (~25 us) is why smaller weights do not get it. The packed copy costs the weight's memory again, is built on first use only and
  rebuilt when the weight changes; contractions longer than 2048 are split and summed (faster that way).

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

    Made from an existing ``nn.Linear`` by :func:`use_fast_cpu_linears`, which also stores its weight
    input-major. Results differ from ``F.linear`` only by float rounding (~1e-7 relative). Anything else
    (smaller weights, autograd, GPU, other dtypes, more rows) runs ``F.linear``.
    """

    MAX_CONTRACTION = 2048  # input features per packed piece
    max_prepacked_rows: int
    prepack_min_elements: int
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
        return (not grad and self.weight.numel() >= self.prepack_min_elements and x.device.type == "cpu"
                and x.dtype == self.weight.dtype == torch.float32
                and 0 < x.numel() // self.in_features <= self.max_prepacked_rows
                and self.weight.device.type == "cpu" and torch.backends.mkldnn.is_available())

    def __getstate__(self) -> dict:
        # oneDNN tensors cannot be copied or pickled; the packed weight is rebuilt on demand anyway.
        return {**self.__dict__, "_packed": None}


PREPACK_MIN_ELEMENTS = 1 << 21


@torch.no_grad()
def use_fast_cpu_linears(module: nn.Module, max_prepacked_rows: int = 64,
                         prepack_min_elements: int = PREPACK_MIN_ELEMENTS) -> int:
    """Give every plain ``nn.Linear`` inside ``module`` the few-row CPU path, in place: a class swap and the
    weight stored input-major (parameters, state-dict keys and every result stay as they are). Weights of at
    least ``prepack_min_elements`` elements multiply at most ``max_prepacked_rows`` rows by a oneDNN-prepacked
    copy (``max_prepacked_rows=0``: never). Returns how many layers have the path."""
    count = 0
    for layer in module.modules():
        if type(layer) is nn.Linear:
            layer.__class__ = FewRowCPULinear
            layer._packed = None
            if layer.weight.is_contiguous():
                layer.weight.data = layer.weight.data.t().contiguous().t()
        if isinstance(layer, FewRowCPULinear):
            layer.max_prepacked_rows, layer.prepack_min_elements = max_prepacked_rows, prepack_min_elements
            count += 1
    return count
