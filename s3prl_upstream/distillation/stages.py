"""The staged schedule: which student parameters train, on which loss, at which learning rate, for how many steps.

Stages run one after another in one Lightning run; the global step says which stage is active, so a
resumed run continues in the right stage. One AdamW holds every student parameter, in groups of
parameters that train in the same stages; a group's learning rate is the active stage's rate, or 0 when
the stage freezes it (AdamW with lr 0 leaves a parameter untouched, weight decay included). Every
parameter stays in the autograd graph, so DDP needs no ``find_unused_parameters``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from torch import nn


class ScheduleError(ValueError):
    """The stage configuration is unusable; the message names the stage, the key and the fix."""


@dataclass(frozen=True)
class Stage:
    """One stage. ``train``: parameter-name prefixes trained (``("",)`` = all); ``freeze``: prefixes held fixed."""

    name: str
    steps: int
    lr: float
    warmup_steps: int
    train: tuple[str, ...]
    freeze: tuple[str, ...]
    positional_loss: float  # weight of the MSE on the positional conv output
    layer_loss: float  # weight of the depth-weighted per-layer MSE

    def trains(self, param_name: str) -> bool:
        return any(param_name.startswith(p) for p in self.train) and not any(param_name.startswith(p) for p in self.freeze)

    def lr_at(self, step_in_stage: int) -> float:
        """Learning rate at a step of this stage: linear warmup from 0 over warmup_steps, then constant."""
        if step_in_stage < self.warmup_steps:
            return self.lr * (step_in_stage + 1) / self.warmup_steps
        return self.lr


def stage_from_config(name: str, cfg: Mapping[str, Any]) -> Stage:
    known = {"steps", "lr", "warmup_steps", "train", "freeze", "positional_loss", "layer_loss"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ScheduleError(f"stages.{name}: unknown key(s) {unknown}; a stage takes {sorted(known)}")
    train = cfg.get("train", "all")
    train = ("",) if train == "all" else tuple(train)
    stage = Stage(
        name=name,
        steps=int(cfg["steps"]),
        lr=float(cfg["lr"]),
        warmup_steps=int(cfg.get("warmup_steps", 0)),
        train=train,
        freeze=tuple(cfg.get("freeze", ())),
        positional_loss=float(cfg.get("positional_loss", 0.0)),
        layer_loss=float(cfg.get("layer_loss", 0.0)),
    )
    if stage.steps < 0 or stage.lr < 0 or stage.warmup_steps < 0:
        raise ScheduleError(f"stages.{name}: steps, lr and warmup_steps must be >= 0")
    if stage.positional_loss < 0 or stage.layer_loss < 0 or stage.positional_loss + stage.layer_loss == 0:
        raise ScheduleError(f"stages.{name}: positional_loss and layer_loss must be >= 0 and not both 0")
    return stage


class Schedule:
    """Stages in order; stages with 0 steps are skipped."""

    def __init__(self, stages: Sequence[Stage]):
        self.stages = [s for s in stages if s.steps > 0]
        if not self.stages:
            raise ScheduleError("every stage has 0 steps; give at least one stage a positive stages.<name>.steps")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Mapping[str, Any]]) -> Schedule:
        return cls([stage_from_config(name, stage_cfg) for name, stage_cfg in cfg.items()])

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def stage_at(self, step: int) -> tuple[int, Stage, int]:
        """(stage index, stage, step within it) at a global step; past the end, the last stage."""
        start = 0
        for index, stage in enumerate(self.stages):
            if step < start + stage.steps or index == len(self.stages) - 1:
                return index, stage, step - start
            start += stage.steps
        raise AssertionError("unreachable: the schedule has at least one stage")

    def check(self, param_names: Iterable[str]) -> None:
        """Every prefix must name a parameter and every stage must train one; else ScheduleError."""
        names = list(param_names)
        for stage in self.stages:
            for prefix in stage.train + stage.freeze:
                if not any(n.startswith(prefix) for n in names):
                    raise ScheduleError(
                        f"stages.{stage.name}: {prefix!r} matches no student parameter; "
                        f"module names start with {sorted({'.'.join(n.split('.')[:2]) for n in names})}"
                    )
            if not any(stage.trains(n) for n in names):
                raise ScheduleError(f"stages.{stage.name}: trains no parameter (train={list(stage.train)}, freeze={list(stage.freeze)})")

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """AdamW groups: parameters trained in the same stages share a group (``trained_in``: stage indices)."""
        groups: dict[tuple[int, ...], list[nn.Parameter]] = {}
        for name, param in model.named_parameters():
            trained_in = tuple(i for i, stage in enumerate(self.stages) if stage.trains(name))
            groups.setdefault(trained_in, []).append(param)
        return [{"params": params, "trained_in": trained_in} for trained_in, params in groups.items()]

    def lr_lambda(self, trained_in: tuple[int, ...]) -> Callable[[int], float]:
        """Learning rate of a group at a global step (the optimizer's base lr is 1, so this is the absolute rate)."""

        def lr(step: int) -> float:
            index, stage, step_in_stage = self.stage_at(step)
            return stage.lr_at(step_in_stage) if index in trained_in else 0.0

        return lr
