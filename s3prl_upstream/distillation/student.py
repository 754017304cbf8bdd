"""The student: a causal streaming WavLM shaped like the teacher, initialised from the teacher's weights.

Student layer k is distilled towards teacher layer ``layers[k]`` and, with ``init: teacher``, starts from
that layer's weights (front end, positional conv and relative embedding come from the teacher too).
Only pre-LN teachers with a LayerNorm conv front end (WavLM Large) convert; WavLM Base/Base+ (post-LN,
GroupNorm front end) have no equivalent weights, so they need ``init: random``, never a silent fallback.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Mapping

from torch import Tensor, nn

from s3prl_upstream.wavlm import CheckpointError, StreamingWavLM, StreamingWavLMConfig, convert_wavlm_checkpoint

from .teacher import S3PRLWavLMTeacher

INIT_MODES = ("teacher", "random")
LAYER_KEY = re.compile(r"^encoder\.layers\.(\d+)\.(.*)$")


class StudentInitError(ValueError):
    """The student cannot be built or initialised as asked; the message says which key differs and the fix."""


def student_config(teacher: nn.Module, overrides: Mapping[str, Any]) -> StreamingWavLMConfig:
    """Teacher sizes, one layer per distilled teacher layer, then the user's ``student.model`` overrides."""
    args = {**teacher.student_architecture, "num_layers": len(teacher.layers), **overrides}
    cfg = StreamingWavLMConfig(**args, source="student.model")
    if cfg.num_layers != len(teacher.layers):
        raise StudentInitError(
            f"student.model.num_layers={cfg.num_layers} but teacher.layers lists {len(teacher.layers)} layers; "
            "the student has one layer per distilled teacher layer: drop the override or change teacher.layers"
        )
    if cfg.dim != teacher.dim:
        raise StudentInitError(
            f"student.model.dim={cfg.dim} but the teacher's hidden size is {teacher.dim}; layer outputs are "
            "compared without a projection, so the student must keep the teacher's dim"
        )
    return cfg


def select_teacher_layers(state_dict: Mapping[str, Tensor], layers: list[int]) -> dict[str, Tensor]:
    """Renumber ``encoder.layers.{layers[k]-1}.*`` to ``encoder.layers.{k}.*`` and drop the other layers."""
    new_index = {teacher_layer - 1: k for k, teacher_layer in enumerate(layers)}
    selected = {}
    for key, value in state_dict.items():
        match = LAYER_KEY.match(key)
        if match is None:
            selected[key] = value
        elif int(match[1]) in new_index:
            selected[f"encoder.layers.{new_index[int(match[1])]}.{match[2]}"] = value
    return selected


def teacher_weights(teacher: nn.Module, teacher_ckpt: dict[str, Any]) -> dict[str, Tensor]:
    """The teacher's weights in the student's key layout (teacher layer numbering)."""
    if not isinstance(teacher, S3PRLWavLMTeacher):
        return teacher.model.state_dict()  # our own model: already the student's layout
    try:
        with warnings.catch_warnings():
            # The converter warns that normalize=true models expect normalized input. Handled here: the
            # teacher normalizes its own input, the student learns to work on the raw waveform.
            warnings.filterwarnings("ignore", message=".*normalized waveforms")
            state_dict, _ = convert_wavlm_checkpoint(teacher_ckpt)
    except CheckpointError as exc:
        raise StudentInitError(
            f"student.init=teacher: this teacher's weights do not fit the streaming WavLM ({exc}). WavLM Base/Base+ "
            "are post-LN with a GroupNorm front end; use a WavLM Large teacher, or set student.init=random to "
            "train the student from random weights"
        ) from exc
    return state_dict


def check_shapes(source: Mapping[str, Tensor], model: nn.Module) -> None:
    """Same keys and shapes as the student, or StudentInitError listing the differences."""
    target = model.state_dict()
    problems = [f"missing in the teacher: {k}" for k in target if k not in source]
    problems += [f"not in the student: {k}" for k in source if k not in target]
    problems += [
        f"{k}: teacher {tuple(source[k].shape)} vs student {tuple(v.shape)}"
        for k, v in target.items()
        if k in source and source[k].shape != v.shape
    ]
    if problems:
        listed = "\n  ".join(problems[:12]) + (f"\n  ... {len(problems) - 12} more" if len(problems) > 12 else "")
        raise StudentInitError(
            f"student.init=teacher: the teacher's weights do not fit the student ({len(problems)} differences):\n  "
            f"{listed}\nDrop the student.model overrides that change sizes, or set student.init=random"
        )


def build_student(
    teacher: nn.Module, teacher_ckpt: dict[str, Any], init: str, overrides: Mapping[str, Any]
) -> tuple[StreamingWavLM, StreamingWavLMConfig]:
    """The student model and its config; with ``init == "teacher"`` loaded strictly from the teacher's weights."""
    if init not in INIT_MODES:
        raise StudentInitError(f"student.init={init!r}; choose one of {INIT_MODES}")
    cfg = student_config(teacher, overrides)
    model = StreamingWavLM(cfg)
    if init == "teacher":
        weights = select_teacher_layers(teacher_weights(teacher, teacher_ckpt), teacher.layers)
        check_shapes(weights, model)
        model.load_state_dict(weights, strict=True)
    return model, cfg
