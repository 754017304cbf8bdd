"""Lightning module of the distillation: a frozen teacher gives targets, the student learns them stage by stage."""

from __future__ import annotations

from typing import Any, Sequence

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from .hooks import captured_outputs
from .losses import layer_cosines, layer_mses, mse, weighted_layer_mse
from .stages import Schedule
from .teacher import TeacherOutput


class StreamingWavLMDistillation(pl.LightningModule):
    """Trains ``student`` (a StreamingWavLM) towards ``teacher`` (see teacher.py) under ``schedule``.

    The teacher is deliberately not a registered submodule: it stays out of checkpoints, optimizers and
    DDP, and is moved to the student's device on first use. Checkpoints carry, besides Lightning's own
    state, ``student_state_dict`` and ``model_config`` ({"wavlm": {...}}) so the s3prl upstreams load
    them directly, and ``distillation`` (teacher file and layers) for the fidelity report.
    """

    def __init__(
        self,
        student: nn.Module,
        model_config: dict[str, Any],
        teacher: nn.Module,
        schedule: Schedule,
        layer_weights: Sequence[float],
        betas: Sequence[float] = (0.9, 0.98),
        weight_decay: float = 0.01,
        eps: float = 1e-8,
        provenance: dict[str, Any] | None = None,
    ):
        super().__init__()
        if len(layer_weights) != len(teacher.layers):
            raise ValueError(f"{len(layer_weights)} layer weights for {len(teacher.layers)} distilled layers")
        self.student = student
        self.model_config = model_config
        self.__dict__["teacher"] = teacher  # plain attribute: bypasses nn.Module registration on purpose
        self.schedule = schedule
        self.layer_weights = list(layer_weights)
        self.betas, self.weight_decay, self.eps = tuple(betas), weight_decay, eps
        self.provenance = provenance or {}

    def targets(self, wav: Tensor) -> TeacherOutput:
        """Teacher targets for wav [B, S]; the teacher follows the student to its device."""
        if next(self.teacher.parameters()).device != wav.device:
            self.teacher.to(wav.device)
        return self.teacher(wav)

    def student_outputs(self, wav: Tensor, wav_lengths: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(positional conv output [B, T, D], per-layer outputs [B, T, D]) of the student."""
        with captured_outputs(self.student.encoder.positional_embedding) as positional:
            hidden, _ = self.student(wav, wav_lengths)
        return positional[0][0], hidden  # the positional conv returns (output, streaming state)

    def distill(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Losses of one batch: positional MSE, per-layer MSEs [L], their depth-weighted mean, cosines [L]."""
        wav = batch["wav"]
        target = self.targets(wav)
        positional, hidden = self.student_outputs(wav, batch["wav_lengths"])
        if positional.shape[1] != target.positional.shape[1]:
            raise RuntimeError(
                f"student gives {positional.shape[1]} frames, teacher {target.positional.shape[1]} for "
                f"{wav.shape[1]} samples; the frame alignment of alignment.py does not hold for this pair"
            )
        per_layer = layer_mses(hidden, target.layers)
        return {
            "positional_mse": mse(positional, target.positional),
            "layer_mses": per_layer,
            "layer_mse": weighted_layer_mse(per_layer, self.layer_weights),
            "layer_cosines": layer_cosines(hidden, target.layers).detach(),
        }

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        index, stage, _ = self.schedule.stage_at(self.global_step)
        out = self.distill(batch)
        # zero-weight terms stay in the graph so every parameter gets a gradient (plain DDP works)
        loss = stage.positional_loss * out["positional_mse"] + stage.layer_loss * out["layer_mse"]
        batch_size = batch["wav"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("stage", float(index), prog_bar=True, batch_size=batch_size)
        self.log("train/positional_mse", out["positional_mse"], batch_size=batch_size)
        self.log("train/layer_mse", out["layer_mse"], batch_size=batch_size)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        out = self.distill(batch)
        batch_size = batch["wav"].shape[0]
        log = dict(batch_size=batch_size, sync_dist=True)
        self.log("val/layer_mse", out["layer_mse"], prog_bar=True, **log)
        self.log("val/positional_mse", out["positional_mse"], **log)
        for k, teacher_layer in enumerate(self.teacher.layers):
            self.log(f"val_layers/mse_teacher_layer{teacher_layer}", out["layer_mses"][k], **log)
            self.log(f"val_layers/cosine_teacher_layer{teacher_layer}", out["layer_cosines"][k], **log)

    def configure_optimizers(self) -> dict[str, Any]:
        groups = self.schedule.param_groups(self.student)
        # base lr 1: each group's LambdaLR factor is its absolute learning rate under the schedule
        optimizer = torch.optim.AdamW(groups, lr=1.0, betas=self.betas, weight_decay=self.weight_decay, eps=self.eps)
        lambdas = [self.schedule.lr_lambda(group["trained_in"]) for group in groups]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["student_state_dict"] = {k: v.detach().cpu() for k, v in self.student.state_dict().items()}
        checkpoint["model_config"] = self.model_config
        checkpoint["distillation"] = dict(self.provenance)
