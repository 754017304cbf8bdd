"""Helpers for the streaming NEST tests: the repository's real Hydra configs with the tiny preset."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nemo_streaming_ssl import config
from nemo_streaming_ssl.streaming.untrained import STREAMING_CONFIG, compose_model_config

REPO_ROOT = Path(__file__).resolve().parents[1]
PRETRAIN_SCRIPT = REPO_ROOT / "examples" / "asr" / "speech_pretraining" / "masked_token_pred_pretrain.py"


def data_overrides(corpus: dict | None, batch_size: int = 4) -> list[str]:
    """Overrides pointing a config at the test corpus, loading in the main process."""
    if corpus is None:
        return ["model.train_ds.manifest_filepath=null", "model.validation_ds.manifest_filepath=null"]
    return [
        f"model.train_ds.manifest_filepath={corpus['train']}",
        f"model.validation_ds.manifest_filepath={corpus['val']}",
        f"model.train_ds.noise_manifest={corpus['noise']}",
        f"model.train_ds.batch_size={batch_size}",
        f"model.validation_ds.batch_size={batch_size}",
        "model.train_ds.num_workers=0",
        "model.validation_ds.num_workers=0",
        "model.train_ds.pin_memory=false",
        "model.validation_ds.pin_memory=false",
    ]


def tarred_overrides(manifest: Path, archives: str, split: str = "train_ds") -> list[str]:
    """Overrides reading ``split`` from NeMo tarred data; the brace pattern is quoted for Hydra's parser."""
    return [
        f"model.{split}.is_tarred=true",
        f"model.{split}.manifest_filepath={manifest}",
        f"model.{split}.tarred_audio_filepaths='{archives}'",
    ]


def compose_config(
    *overrides: str, config_name: str = STREAMING_CONFIG, corpus: dict | None = None, preset: str = "tiny"
) -> DictConfig:
    """The full config, resolved, as the pretrain script would see it."""
    cfg = config.compose_config(config_name, [f"preset={preset}", *data_overrides(corpus), *overrides])
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


def model_config(
    *overrides: str, config_name: str = STREAMING_CONFIG, corpus: dict | None = None, preset: str = "tiny"
) -> DictConfig:
    """The ``model`` node; without a corpus it has no data sections (no loaders are built)."""
    if corpus is None:
        return compose_model_config([f"preset={preset}", *overrides], config_name)
    return compose_config(*overrides, config_name=config_name, corpus=corpus, preset=preset).model


def run_pretrain(args: list[str], cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    """Run the pretrain script as a file in a fresh Python process, as a user would."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    return subprocess.run(
        [sys.executable, str(PRETRAIN_SCRIPT), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def finetune_config(pretrained: Path, corpus: dict, config_name: str = "fastconformer_ctc_streaming_finetune", **overrides):
    """The shipped config (composed by Hydra, as the script does) pointed at ``pretrained`` and the corpus."""
    cfg = config.compose_config(config_name)
    cfg.pretrained_nemo = str(pretrained)
    if cfg.get("tokenizer_build") is not None:
        cfg.tokenizer_build.dir = tempfile.mkdtemp(prefix="tokenizer", dir=corpus["train"].parent)
    cfg.model.train_ds.manifest_filepath = str(corpus["train"])
    cfg.model.validation_ds.manifest_filepath = str(corpus["val"])
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg
