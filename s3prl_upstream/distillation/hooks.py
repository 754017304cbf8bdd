"""Reading an intermediate output (the positional conv's) without changing the model that computes it."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from torch import nn


@contextmanager
def captured_outputs(module: nn.Module) -> Iterator[list[Any]]:
    """Collect every output of ``module`` during the with-block (a forward hook, removed on exit)."""
    outputs: list[Any] = []
    handle = module.register_forward_hook(lambda _module, _inputs, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()
