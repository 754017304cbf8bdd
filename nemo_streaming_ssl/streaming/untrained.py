"""Randomly initialised NEST models from the shipped configs, for tests, benchmarks and dry runs.

Streaming numbers (exactness, latency, compute) do not depend on training, so the tests and
``scripts/bench_streaming.py`` build models straight from ``conf/*.yaml`` with Hydra overrides
(``preset=tiny``, ``mode=lookahead``, ``model.encoder.n_layers=4``, ...). The data sections are
dropped: these models are for inference only.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from ..config import compose_config

STREAMING_CONFIG = "nest_fast-conformer_streaming"
OFFLINE_CONFIG = "nest_fast-conformer_offline"


def compose_model_config(overrides: Sequence[str] = (), config_name: str = STREAMING_CONFIG) -> DictConfig:
    """The ``model`` node of ``conf/<config_name>.yaml`` after Hydra ``overrides``, without data sections."""
    model_cfg = compose_config(config_name, overrides).model
    OmegaConf.set_struct(model_cfg, False)
    for key in ("train_ds", "validation_ds", "test_ds"):
        model_cfg.pop(key, None)
    return model_cfg


def untrained_model(overrides: Sequence[str] = (), config_name: str = STREAMING_CONFIG):
    """A randomly initialised ``StreamingNESTModel`` (eval mode) from a shipped config."""
    from nemo_streaming_ssl.models import StreamingNESTModel

    return StreamingNESTModel(compose_model_config(overrides, config_name)).eval()
