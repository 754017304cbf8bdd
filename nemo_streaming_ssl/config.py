"""The shipped Hydra configs (top-level ``conf/``): where they are, and composing one with overrides.

``nemo_streaming_ssl/conf`` is a link to ``conf/`` and the wheel ships its YAML as package data, so the
folder is this package's resource in a checkout, an editable install and a plain ``pip install .`` alike.
Imports Hydra only, never NeMo or torch: the streaming WavLM recipe (``s3prl_upstream``) uses it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig


def config_dir() -> Path:
    """The folder of the shipped configs, as an absolute path (what Hydra's ``config_path`` takes)."""
    conf = resources.files(__package__) / "conf"
    if not (isinstance(conf, Path) and conf.is_dir()):
        raise FileNotFoundError(
            f"{conf}: the shipped Hydra configs are not a folder there. In a git checkout it is a link to ../conf "
            "(clone with symlinks: git config core.symlinks true); otherwise reinstall: pip install ."
        )
    return conf.resolve()  # in a checkout: the real conf/, as messages and Hydra's run logs should name it


def compose_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/<name>.yaml`` after the Hydra ``overrides`` (``mode=lookahead``, ``preset=tiny``, ``a.b=1``),
    as the example scripts receive it."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        return compose(config_name=name, overrides=list(overrides))
