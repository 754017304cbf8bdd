"""Swap NeMo modules to our subclasses that change only their streaming path."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def swap_class(modules: Iterable[nn.Module], nemo_class: type, streaming_class: type) -> list[nn.Module]:
    """Give each module of exactly ``nemo_class`` the class ``streaming_class`` (a subclass adding a
    streaming path); parameters, state-dict keys and the offline forward stay as they are. Any other
    module is an error: the streaming path was written for NeMo's."""
    swapped = []
    for module in modules:
        if type(module) is nemo_class:
            module.__class__ = streaming_class
        if not isinstance(module, streaming_class):
            raise TypeError(f"unexpected {type(module).__name__} where the streaming runner expects {nemo_class.__name__}")
        swapped.append(module)
    return swapped
