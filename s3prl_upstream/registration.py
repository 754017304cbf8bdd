"""Makes an unmodified s3prl 0.4.18 see our upstreams and read its own checkpoints on torch >= 2.6.

Called by the import hook (:mod:`s3prl_upstream.s3prl_hook`) when ``s3prl.hub`` is imported, and by the
``streaming-ssl-s3prl run-downstream`` launcher.
"""

from __future__ import annotations

import argparse
import warnings
from types import ModuleType

import torch

from s3prl_upstream import hubconf

# What run_downstream.py pickles into its experiment checkpoints (states-*.ckpt, dev-best.ckpt) besides
# tensors, dicts, lists and numbers: the parsed command line ``Args``. Nothing else is allowed.
S3PRL_CHECKPOINT_GLOBALS = (argparse.Namespace,)


def allow_s3prl_checkpoints() -> None:
    """Lets ``torch.load``'s weights-only default (torch >= 2.6) read s3prl's experiment checkpoints.

    s3prl 0.4.18 calls ``torch.load(path)`` without ``weights_only`` for ``-e`` (evaluate, resume) and ``-i``;
    on torch 2.8 that refuses the pickled ``argparse.Namespace``. We allow-list exactly that class (plain
    attribute storage, no code runs on load) instead of turning weights-only loading off.
    """
    torch.serialization.add_safe_globals(list(S3PRL_CHECKPOINT_GLOBALS))


def register(hub: ModuleType | None = None) -> list[str]:
    """Sets every entry of :data:`hubconf.ENTRIES` as an attribute of ``s3prl.hub``; returns their names.

    An attribute that s3prl itself already defines under one of our names is left alone (with a warning).
    """
    if hub is None:
        import s3prl.hub as hub
    registered = []
    for name, entry in hubconf.ENTRIES.items():
        existing = getattr(hub, name, None)
        if existing is not None and getattr(existing, "__module__", None) != hubconf.__name__:
            warnings.warn(f"s3prl.hub already defines {name!r}; the streaming-ssl entry of that name is not added")
            continue
        setattr(hub, name, entry)
        registered.append(name)
    allow_s3prl_checkpoints()
    return registered
