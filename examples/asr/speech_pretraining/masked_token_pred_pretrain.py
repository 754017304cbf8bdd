#!/usr/bin/env python3
"""Pretrain a streaming FastConformer with NEST (masked token prediction) on NeMo manifests.

    python examples/asr/speech_pretraining/masked_token_pred_pretrain.py --config-name=nest_fast-conformer_streaming \
        model.train_ds.manifest_filepath=/data/train.json model.validation_ds.manifest_filepath=/data/val.json \
        [model.train_ds.noise_manifest=/data/noise.json] [preset=medium] [mode=lookahead] trainer.devices=4

Configs live in the repository's conf/ (streaming modes, size presets, the offline baseline
``--config-name=nest_fast-conformer_offline``); see STREAMING_NEST.md. Before the trainer starts, every line
and audio file of the train, validation and noise manifests is checked (a bad line stops the run, naming the
file and line) and the utterances dropped by the duration limits are counted; for NeMo tarred data
(``is_tarred``, docs/data_at_scale.md) every archive member, and how the processes will split the archives. Logs (TensorBoard) and
checkpoints go to ``exp_manager.exp_dir``/``name``; rerunning the same command resumes from the last
checkpoint. A rerun whose model config differs from the run in that folder (another mode, preset, attention
context, masking...) stops before anything is trained or written, listing what differs: give it its own
``name=``. The path of the final ``.nemo`` is printed at the end.

Run it as a file: the nemo_toolkit wheel installs top-level ``examples``/``scripts``/``tests`` packages, so
``python -m examples...`` would find NeMo's, not ours.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
# Runs from a checkout without installing the project (pip install -e . makes this a no-op).
if (REPO_ROOT / "nemo_streaming_ssl").is_dir() and str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from nemo_streaming_ssl.cli import MANIFEST, exit_on_missing_paths  # noqa: E402

if __name__ == "__main__":  # before the NeMo imports below; every line is checked once NeMo is loaded
    exit_on_missing_paths(sys.argv[1:], {"manifest_filepath": MANIFEST, "noise_manifest": MANIFEST})

import lightning.pytorch as pl  # noqa: E402
from omegaconf import DictConfig, ListConfig, OmegaConf  # noqa: E402

from nemo.core.config import hydra_runner  # noqa: E402
from nemo.utils import logging  # noqa: E402
from nemo.utils.callbacks import NeMoModelCheckpoint  # noqa: E402
from nemo.utils.exp_manager import exp_manager  # noqa: E402

from nemo_streaming_ssl.config import config_dir  # noqa: E402
from nemo_streaming_ssl.console import fold_nemo_config_dumps, progress_callbacks  # noqa: E402
from nemo_streaming_ssl.data.manifest import ManifestError, validate_manifest  # noqa: E402
from nemo_streaming_ssl.data.tarred import check_tarred_dataset  # noqa: E402
from nemo_streaming_ssl.models import StreamingNESTModel  # noqa: E402
from nemo_streaming_ssl.run_record import (  # noqa: E402
    RerunError,
    check_rerun,
    logged_nemo_model_config,
    nemo_model_definition,
    record_run,
)

MANIFEST_ERROR_EXIT = 2
RERUN_ERROR_EXIT = 2
NEW_RUN = "give it its own name (name=...) or folder (exp_manager.exp_dir=...)"


def manifest_paths(value) -> list[str]:
    """A manifest setting as NeMo accepts it (path, comma-separated paths, list, None) -> list of paths."""
    if value is None:
        return []
    if isinstance(value, (list, ListConfig)):
        return [str(v) for v in value]
    return [p.strip() for p in str(value).split(",") if p.strip()]


def validate_data(model_cfg: DictConfig, world_size: int) -> None:
    """Check every manifest of the run (and every archive member of tarred data, as ``world_size`` processes will
    read them) and print what will be used; raise ManifestError on a bad one."""
    sample_rate = model_cfg.sample_rate
    for split in ("train_ds", "validation_ds"):
        ds = model_cfg.get(split)
        if ds is None:
            continue
        paths = manifest_paths(ds.get("manifest_filepath"))
        lhotse = ds.get("use_lhotse", False)
        if lhotse and not paths:
            print(f"{split}: lhotse data without manifest_filepath (shar_path, cuts_path, input_cfg) is not validated here")
            continue
        if not paths:
            raise ManifestError(f"model.{split}.manifest_filepath is not set")
        if ds.get("is_tarred", False) or (lhotse and ds.get("tarred_audio_filepaths")):
            if len(paths) > 1:
                raise ManifestError(
                    f"model.{split}: give one tarred manifest and its archives (the pretrain script checks no "
                    "bucketed tarred data); merge the buckets into one tarred set with scripts/make_tarred_dataset.py"
                )
            report = check_tarred_dataset(
                paths[0],
                ds.get("tarred_audio_filepaths"),
                sample_rate,
                ds.get("min_duration"),
                ds.get("max_duration"),
                world_size=world_size,
                batch_size=ds.batch_size,
                drop_last=ds.get("drop_last", False),
                # Lhotse gives every process every archive, in its own order, as an endless stream.
                shard_strategy="replicate" if lhotse else ds.get("tarred_shard_strategy", "scatter"),
                balanced=split == "train_ds" and not lhotse,  # uneven training batches hang DDP at the epoch's end
            )
            print(f"{split}: {report.summary()}")
        else:
            for path in paths:
                report = validate_manifest(path, sample_rate, ds.get("min_duration"), ds.get("max_duration"))
                print(f"{split}: {report.summary()}")
        noise_paths = manifest_paths(ds.get("noise_manifest"))
        for path in noise_paths:
            print(f"{split} noise: {validate_manifest(path, sample_rate).summary()}")
        if not noise_paths and split == "train_ds":
            print("train_ds: no noise_manifest: the batch augmentor mixes in other utterances only, never noise")


def nemo_file(trainer: pl.Trainer, log_dir: Path, name: str) -> Path:
    """Where exp_manager's checkpoint callback wrote the final .nemo (or where we save it ourselves)."""
    for callback in trainer.callbacks:
        if isinstance(callback, NeMoModelCheckpoint) and callback.save_nemo_on_train_end:
            return Path(callback.dirpath) / f"{callback.prefix}{callback.postfix}"
    return Path(log_dir) / f"{name}.nemo"


@hydra_runner(config_path=str(config_dir()), config_name="nest_fast-conformer_streaming")
def main(cfg: DictConfig) -> None:
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    if any(cfg.model.get(split, {}).get("use_lhotse", False) for split in ("train_ds", "validation_ds")):
        # Lhotse's samplers split the data over the processes themselves; Lightning's would wrap them and fail.
        trainer_cfg.setdefault("use_distributed_sampler", False)
    # The trainer knows the number of processes the data is split over; building it starts none.
    trainer = pl.Trainer(**trainer_cfg, callbacks=progress_callbacks(cfg.trainer))
    # Every DDP process runs this script (Lightning's launcher, torchrun, SLURM); the first of each node checks the data.
    if os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")) == "0":
        try:
            validate_data(cfg.model, trainer.world_size)
        except ManifestError as exc:
            print(f"manifest error: {exc}", file=sys.stderr)
            raise SystemExit(MANIFEST_ERROR_EXIT) from None
    # The same seed in every process: a rerun repeats a run, and 2 nodes x 1 device train as 1 node x 2 devices.
    pl.seed_everything(cfg.get("seed", 0), workers=True)
    fold_nemo_config_dumps(cfg.get("verbose", False))
    logging.info(f"Config:\n{OmegaConf.to_yaml(cfg)}")

    log_dir = exp_manager(trainer, cfg.get("exp_manager", None))
    try:  # before the model is built or a checkpoint resumed: a run of another config there stays as it is
        earlier = nemo_model_definition(logged_nemo_model_config(log_dir) or {}) or None
        definition = nemo_model_definition(OmegaConf.to_container(cfg.model, resolve=True))
        check_rerun(log_dir, definition, new_run=NEW_RUN, earlier=earlier)
        record_run(log_dir, definition)
    except RerunError as exc:
        print(f"rerun error: {exc}", file=sys.stderr)
        raise SystemExit(RERUN_ERROR_EXIT) from None
    model = StreamingNESTModel(cfg=cfg.model, trainer=trainer)
    trainer.fit(model)

    path = nemo_file(trainer, log_dir, cfg.name)
    if not path.is_file():
        model.save_to(str(path))
    if trainer.is_global_zero:
        print(f"Pretrained model (.nemo): {path.resolve()}")


if __name__ == "__main__":
    main()
