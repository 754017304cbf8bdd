"""The whole recipe from a Hydra/OmegaConf config: check inputs, build teacher, student and trainer, fit, export.

Everything a user can get wrong (manifests, teacher file, layer choice, student sizes, stage settings) is
checked before the first training step, with an error that names the key and the fix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from nemo_streaming_ssl.run_record import check_rerun, record_run

from .data import DistillDataModule
from .losses import depth_weights
from .module import StreamingWavLMDistillation
from .stages import Schedule
from .student import build_student
from .teacher import load_teacher

log = logging.getLogger(__name__)

MONITOR = "val/layer_mse"  # comparable across stages: always the full depth-weighted layer loss
RESERVED_TRAINER_KEYS = ("max_steps", "max_epochs", "use_distributed_sampler", "check_val_every_n_epoch")


class RecipeError(ValueError):
    """A recipe-level setting is unusable (the message names the key and the fix)."""


STUDENT_KEYS = ("student_state_dict", "model_config", "distillation")


@dataclass
class DistillationResult:
    checkpoint_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    students: dict[str, Path]  # "last" and, once a validation ran, "best": the student-only -k files
    global_step: int
    is_global_zero: bool


def export_student(checkpoint: Path, out: Path) -> Path:
    """Copy the student part of a Lightning checkpoint (no optimizer state) into a small ``-k`` file."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    torch.save({key: ckpt[key] for key in STUDENT_KEYS}, out)
    return out


def run_definition(cfg: DictConfig) -> dict[str, Any]:
    """What defines a distillation run (see nemo_streaming_ssl.run_record): teacher, student, losses, optimizer
    and stages; not the data, the trainer or the stage lengths (raise stages.<name>.steps and resume to lengthen)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    return {
        "teacher": {"checkpoint": str(Path(c["teacher"]["checkpoint"]).resolve()), "layers": c["teacher"]["layers"]},
        "student": c["student"],
        "loss": c["loss"],
        "optim": c["optim"],
        "stages": {name: {k: v for k, v in stage.items() if k != "steps"} for name, stage in c["stages"].items()},
        "sample_rate": c["data"]["sample_rate"],
    }


def check_experiment_folder(cfg: DictConfig, resume: str | None, checkpoint_dir: Path) -> None:
    """A new run never overwrites an earlier run's checkpoints; a resumed run must have the earlier run's definition."""
    earlier = sorted(p.name for p in checkpoint_dir.glob("*.ckpt"))
    if resume is None and earlier:
        raise RecipeError(
            f"exp_dir={cfg.exp_dir} holds the checkpoints of an earlier run ({', '.join(earlier)}); a new run would "
            f"overwrite them. Continue that run with resume_from=auto, or start a new one in its own folder "
            f"(exp_dir=... or name=...).")
    check_rerun(cfg.exp_dir, run_definition(cfg), new_run="give it its own folder (exp_dir=... or name=...)")


def resolve_resume(resume_from: str | None, checkpoint_dir: Path) -> str | None:
    """``None``: start fresh; ``auto``: last.ckpt of this experiment when it exists; else a path that must exist."""
    if resume_from in (None, ""):
        return None
    if resume_from == "auto":
        last = checkpoint_dir / "last.ckpt"
        return str(last) if last.is_file() else None
    if not Path(resume_from).is_file():
        raise RecipeError(f"resume_from={resume_from}: no such checkpoint; use a .ckpt from {checkpoint_dir} or 'auto'")
    return str(resume_from)


def layer_weights(loss_cfg: DictConfig, num_layers: int) -> list[float]:
    if loss_cfg.get("layer_weights") is not None:
        weights = [float(w) for w in loss_cfg.layer_weights]
        if len(weights) != num_layers or any(w < 0 for w in weights) or sum(weights) == 0:
            raise RecipeError(f"loss.layer_weights={weights}: need {num_layers} non-negative weights, not all 0")
        return weights
    return depth_weights(num_layers, loss_cfg.first_layer_weight, loss_cfg.last_layer_weight)


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    reserved = [k for k in RESERVED_TRAINER_KEYS if k in kwargs]
    if reserved:
        raise RecipeError(f"trainer.{reserved[0]} is set by the recipe; the run length is the sum of stages.<name>.steps")
    return kwargs


def build(cfg: DictConfig) -> tuple[DistillDataModule, StreamingWavLMDistillation]:
    """Check every input and build data and model (no training); raises before anything is trained."""
    data = DistillDataModule(
        train_manifest=cfg.data.train_manifest,
        val_manifest=cfg.data.val_manifest,
        train_tarred_audio_filepaths=cfg.data.get("train_tarred_audio_filepaths"),
        val_tarred_audio_filepaths=cfg.data.get("val_tarred_audio_filepaths"),
        train_shar_path=cfg.data.get("train_shar_path"),
        val_shar_path=cfg.data.get("val_shar_path"),
        train_cuts_path=cfg.data.get("train_cuts_path"),
        val_cuts_path=cfg.data.get("val_cuts_path"),
        sample_rate=cfg.data.sample_rate,
        crop_seconds=cfg.data.crop_seconds,
        val_crop_seconds=cfg.data.val_crop_seconds,
        min_seconds=cfg.data.min_seconds,
        batch_size=cfg.data.batch_size,
        val_batch_size=cfg.data.val_batch_size,
        num_workers=cfg.data.num_workers,
        seed=cfg.seed,
    )
    data.prepare()
    if "weights_only" in cfg.teacher:  # the old key meant the opposite and is no longer read
        raise RecipeError("teacher.weights_only is gone: teacher files are always loaded weights-only; for a file "
                          "you trust that holds pickled Python objects, set teacher.trust_pickle=true instead")
    teacher, teacher_ckpt = load_teacher(cfg.teacher.checkpoint, list(cfg.teacher.layers),
                                         trust_pickle=cfg.teacher.trust_pickle)
    overrides = OmegaConf.to_container(cfg.student.model, resolve=True) if cfg.student.get("model") else {}
    student, student_cfg = build_student(teacher, teacher_ckpt, cfg.student.init, overrides)
    del teacher_ckpt  # the teacher keeps only what it runs; the full checkpoint can be large
    schedule = Schedule.from_config(OmegaConf.to_container(cfg.stages, resolve=True))
    schedule.check(name for name, _ in student.named_parameters())
    module = StreamingWavLMDistillation(
        student,
        student_cfg.to_dict(),
        teacher,
        schedule,
        layer_weights(cfg.loss, len(teacher.layers)),
        betas=list(cfg.optim.betas),
        weight_decay=cfg.optim.weight_decay,
        eps=cfg.optim.eps,
        provenance={"teacher_checkpoint": str(Path(cfg.teacher.checkpoint).resolve()), "teacher_layers": list(teacher.layers)},
    )
    return data, module


def run_distillation(cfg: DictConfig) -> DistillationResult:
    """Train as configured (resuming when asked) and return where the checkpoints are."""
    pl.seed_everything(cfg.seed, workers=True)
    kwargs = trainer_kwargs(cfg)
    exp_dir = Path(cfg.exp_dir)
    checkpoint_dir = exp_dir / "checkpoints"
    resume = resolve_resume(cfg.get("resume_from"), checkpoint_dir)
    check_experiment_folder(cfg, resume, checkpoint_dir)
    data, module = build(cfg)
    record_run(exp_dir, run_definition(cfg))
    best = ModelCheckpoint(
        dirpath=checkpoint_dir, filename="best-step{step:07d}", monitor=MONITOR, mode="min", save_top_k=1,
        auto_insert_metric_name=False,
    )
    last = ModelCheckpoint(
        dirpath=checkpoint_dir, save_top_k=0, save_last=True, every_n_train_steps=cfg.checkpoint.every_n_steps
    )
    total_steps = module.schedule.total_steps
    interval = kwargs.get("val_check_interval")
    if isinstance(interval, int) and interval > total_steps:
        # A run shorter than the interval would never validate, so never write best-*.ckpt / student_best.pt.
        log.info("trainer.val_check_interval=%d is longer than the run: validating at step %d", interval, total_steps)
        kwargs["val_check_interval"] = total_steps
    trainer = pl.Trainer(
        **kwargs,
        max_steps=total_steps,
        check_val_every_n_epoch=None,  # validation every trainer.val_check_interval steps, across epochs
        use_distributed_sampler=False,  # CropPlan shards batches over ranks itself
        callbacks=[best, last, LearningRateMonitor(logging_interval="step")],
        logger=TensorBoardLogger(save_dir=str(exp_dir), name="tensorboard", version=""),
        default_root_dir=str(exp_dir),
    )
    log.info("stages: %s", ", ".join(f"{s.name} ({s.steps} steps)" for s in module.schedule.stages))
    trainer.fit(module, datamodule=data, ckpt_path=resume)
    last_path = checkpoint_dir / "last.ckpt"
    trainer.save_checkpoint(last_path)  # the final step, whether or not it fell on a checkpoint interval
    best_path = Path(best.best_model_path) if best.best_model_path else None
    students = {"last": checkpoint_dir / "student_last.pt"}
    if best_path is not None:
        students["best"] = checkpoint_dir / "student_best.pt"
    if trainer.is_global_zero:
        export_student(last_path, students["last"])
        if best_path is not None:
            export_student(best_path, students["best"])
    return DistillationResult(checkpoint_dir, last_path, best_path, students, trainer.global_step,
                              trainer.is_global_zero)
