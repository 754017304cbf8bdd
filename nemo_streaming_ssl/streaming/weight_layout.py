"""Linear weights stored input-major, so that the few-row products of streaming steps are cheaper on CPU.

``F.linear(x, W)`` multiplies x (rows, in) by W^T, W being (out, in). On CPU that is MKL's GEMM with a
transposed right-hand matrix, which it repacks at every call; with the 1-20 rows of a streaming step the
repacking is a large share of the product: 128 products of 5 rows of the small preset take 8.4 ms with
W row-major and 5.8 ms with W input-major (W^T then a plain row-major matrix), ~9% of a whole step of
400-800 ms chunks (~2% at 80 ms, where one-row products take another path). Storing W input-major keeps
the parameter itself (same shape, values and state-dict entry, no copy): only its strides change, from
(in, 1) to (1, out). Products of many rows (the offline forward) cost the same either way and give the
same numbers up to float rounding.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def use_input_major_linear_weights(module: nn.Module) -> None:
    """Store the weight of every ``nn.Linear`` inside ``module`` input-major (see the module doc)."""
    for linear in module.modules():
        if isinstance(linear, nn.Linear) and linear.weight.is_contiguous():
            linear.weight.data = linear.weight.data.t().contiguous().t()
