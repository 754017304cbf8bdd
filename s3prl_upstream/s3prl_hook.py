"""Import hook: adds our streaming WavLM and NEST entries to ``s3prl.hub`` the moment anything imports it.

``s3prl.hub`` is a fixed list of imports with no plugin mechanism, and every s3prl caller (run_downstream.py,
the Runner, ``S3PRLUpstream``) does ``getattr(s3prl.hub, name)``. A ``.pth`` file in site-packages
(``streaming_ssl_s3prl.pth``, installed by ``pip install .`` or ``streaming-ssl-s3prl install-hook``) calls
:func:`install` at interpreter start-up. This module runs in every Python process of the environment, so it
is stdlib-only and does nothing until ``s3prl.hub`` itself is imported; torch and our model are imported only
then, by :mod:`s3prl_upstream.registration`.
"""

from __future__ import annotations

import sys

HUB_MODULE = "s3prl.hub"


class _RegisteringLoader:
    """Wraps s3prl.hub's real loader: executes the module as usual, then adds our entries to it."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        register_into(module)

    def __getattr__(self, name):  # get_source, get_code, ... for inspect and tracebacks
        return getattr(self._loader, name)


class S3prlHubFinder:
    """``sys.meta_path`` finder that only answers for ``s3prl.hub``, by asking the other finders."""

    def find_spec(self, fullname, path, target=None):
        if fullname != HUB_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


def register_into(hub) -> None:
    """Adds the entries to ``hub``; a broken streaming-ssl install must not break s3prl, so it only warns."""
    try:
        from s3prl_upstream.registration import register

        register(hub)
    except Exception as error:  # noqa: BLE001 - any failure here must leave s3prl usable
        print(
            f"streaming-ssl: could not add the streaming_wavlm/streaming_nest entries to s3prl.hub: {type(error).__name__}: "
            f"{error}\n  Check the installation with `streaming-ssl-s3prl status`.",
            file=sys.stderr,
        )


def is_installed() -> bool:
    """True when this interpreter's import system carries the hook."""
    return any(type(finder).__name__ == S3prlHubFinder.__name__ for finder in sys.meta_path)


def install() -> None:
    """Puts the finder first on ``sys.meta_path`` (once); registers at once if s3prl.hub is already loaded."""
    if HUB_MODULE in sys.modules:
        register_into(sys.modules[HUB_MODULE])
    elif not is_installed():
        sys.meta_path.insert(0, S3prlHubFinder())
