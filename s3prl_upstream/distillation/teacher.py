"""Distillation teachers: a frozen WavLM that gives per-layer targets on the student's frame grid.

Two kinds, one interface (``forward(wav [B, S]) -> TeacherOutput`` with ``ceil(S / 320)`` frames):

* a Microsoft/s3prl WavLM checkpoint (``{"cfg": ..., "model": ...}``; Base, Base+ or Large) run by
  s3prl's installed ``WavLM`` class;
* one of our streaming WavLM checkpoints run offline (``causal=False``), loaded by ``load_streaming_wavlm``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3prl_upstream.wavlm import CheckpointError, ModelConfigError, StreamingWavLM, load_streaming_wavlm
from s3prl_upstream.wavlm.checkpoint import read_checkpoint

from .alignment import ConvLayout, teacher_left_pad_samples, valid_frames
from .hooks import captured_outputs


class TeacherError(ValueError):
    """The teacher checkpoint or the teacher settings cannot be used; the message names the file and the fix."""


@dataclass
class TeacherOutput:
    """Targets for one batch, all on the student's frame grid.

    positional: [B, T, D] output of the positional conv branch (conv + GELU, before it is added to its input).
    layers: one [B, T, D] tensor per distilled teacher layer (that layer's output, no final LayerNorm).
    """

    positional: Tensor
    layers: list[Tensor]


def is_s3prl_wavlm_checkpoint(ckpt: dict[str, Any]) -> bool:
    """Microsoft/s3prl WavLM layout: a flat ``cfg`` dict of WavLMConfig fields and a ``model`` state dict."""
    return isinstance(ckpt.get("cfg"), dict) and isinstance(ckpt.get("model"), dict) and "encoder_layers" in ckpt["cfg"]


def is_streaming_wavlm_checkpoint(ckpt: dict[str, Any]) -> bool:
    """Our layout: ``student_state_dict`` plus ``model_config`` (a distillation or converted checkpoint)."""
    return isinstance(ckpt.get("student_state_dict"), dict) and isinstance(ckpt.get("model_config"), dict)


def check_layers(layers: Sequence[int], num_layers: int, where: str) -> list[int]:
    """1-based teacher layer indices, strictly increasing and within the teacher's depth."""
    layers = [int(i) for i in layers]
    if not layers:
        raise TeacherError(f"{where}: teacher.layers is empty; list the teacher layers to distil, e.g. [1,2,3,4,5,6]")
    if any(b <= a for a, b in zip(layers, layers[1:])) or layers[0] < 1 or layers[-1] > num_layers:
        raise TeacherError(
            f"{where}: teacher.layers={layers} must be strictly increasing 1-based indices within the "
            f"teacher's {num_layers} layers"
        )
    return layers


class FrozenTeacher(nn.Module):
    """What both teachers share: a frozen model, the distilled layers, the front end's timing."""

    def __init__(self, model: nn.Module, layers: Sequence[int], conv_layout: ConvLayout, dim: int):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.layers = list(layers)
        self.conv_layout = list(conv_layout)
        self.left_pad_samples = teacher_left_pad_samples(self.conv_layout)
        self.dim = dim

    def num_frames(self, num_samples: int) -> int:
        """Frames the teacher emits for S student samples (after our left padding): ceil(S / 320)."""
        return valid_frames(num_samples + self.left_pad_samples, self.conv_layout)


class S3PRLWavLMTeacher(FrozenTeacher):
    """A Microsoft/s3prl WavLM checkpoint run by s3prl's installed ``WavLM``; layers past the last distilled one are dropped."""

    def __init__(self, model: nn.Module, layers: Sequence[int], normalize_waveform: bool):
        model.encoder.layers = model.encoder.layers[: layers[-1]]  # deeper layers never contribute a target
        model.encoder.layerdrop = 0.0
        conv_layout = [(block[0].kernel_size[0], block[0].stride[0]) for block in model.feature_extractor.conv_layers]
        super().__init__(model, layers, conv_layout, model.cfg.encoder_embed_dim)
        self.normalize_waveform = normalize_waveform

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], layers: Sequence[int], where: str) -> S3PRLWavLMTeacher:
        from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

        cfg = WavLMConfig(ckpt["cfg"])
        layers = check_layers(layers, cfg.encoder_layers, where)
        try:
            model = WavLM(cfg)
        except Exception as exc:
            raise TeacherError(f"{where}: s3prl's WavLM cannot be built from this cfg ({exc})") from exc
        try:
            model.load_state_dict(ckpt["model"], strict=True)
        except RuntimeError as exc:
            raise TeacherError(f"{where}: weights do not match the checkpoint's own cfg: {exc}") from exc
        return cls(model, layers, normalize_waveform=bool(cfg.normalize))

    @property
    def student_architecture(self) -> dict[str, Any]:
        """StreamingWavLMConfig arguments with this teacher's sizes (the student's default shape)."""
        cfg = self.model.cfg
        return {
            "hidden_dims": [block[0].out_channels for block in self.model.feature_extractor.conv_layers],
            "kernel_sizes": [kernel for kernel, _ in self.conv_layout],
            "strides": [stride for _, stride in self.conv_layout],
            "dim": cfg.encoder_embed_dim,
            "ffn_dim": cfg.encoder_ffn_embed_dim,
            "num_heads": cfg.encoder_attention_heads,
            "num_buckets": cfg.num_buckets,
            "max_distance": cfg.max_distance,
            "conv_pos": cfg.conv_pos,
            "conv_pos_groups": cfg.conv_pos_groups,
        }

    @torch.no_grad()
    def forward(self, wav: Tensor) -> TeacherOutput:
        """wav [B, S] -> targets with ceil(S / 320) frames (see alignment.py)."""
        if self.normalize_waveform:  # per utterance, as s3prl's WavLM expert does for checkpoints trained that way
            wav = F.layer_norm(wav, wav.shape[-1:])
        # the teacher keeps float32 weights even when a "-true" precision hands it a bf16/fp16 batch
        wav = F.pad(wav.to(self.model.layer_norm.weight.dtype), (self.left_pad_samples, 0))
        with captured_outputs(self.model.encoder.pos_conv) as positional:
            (_, layer_results), _ = self.model.extract_features(
                wav, padding_mask=None, mask=False, output_layer=self.layers[-1], ret_layer_results=True
            )
        # layer_results[0] is the encoder input, layer_results[i] the output of layer i; each [T, B, D]
        return TeacherOutput(
            positional=positional[0].transpose(1, 2),
            layers=[layer_results[i][0].transpose(0, 1) for i in self.layers],
        )


class StreamingWavLMTeacher(FrozenTeacher):
    """One of our streaming WavLM checkpoints run offline (``causal=False``: unpadded front end, full attention)."""

    STREAMING_ARGS = ("num_layers", "causal", "window_size", "lookahead_size", "dropout")

    def __init__(self, model: nn.Module, layers: Sequence[int]):
        cfg = model.config
        super().__init__(model, layers, list(zip(cfg.kernel_sizes, cfg.strides)), cfg.dim)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], layers: Sequence[int], where: str) -> StreamingWavLMTeacher:
        try:
            stored = load_streaming_wavlm(ckpt)
        except (CheckpointError, ModelConfigError) as exc:
            raise TeacherError(f"{where}: {exc}") from exc
        layers = check_layers(layers, stored.config.num_layers, where)
        # offline, and only as deep as the last distilled layer; causality changes no weight
        model = StreamingWavLM(stored.config.replace(causal=False, num_layers=layers[-1]))
        kept = model.state_dict().keys()
        model.load_state_dict({k: v for k, v in stored.state_dict().items() if k in kept}, strict=True)
        return cls(model, layers)

    @property
    def student_architecture(self) -> dict[str, Any]:
        """StreamingWavLMConfig arguments with this teacher's sizes (the student's default shape)."""
        return {k: v for k, v in self.model.config.to_dict()["wavlm"].items() if k not in self.STREAMING_ARGS}

    @torch.no_grad()
    def forward(self, wav: Tensor) -> TeacherOutput:
        """wav [B, S] -> targets with ceil(S / 320) frames (see alignment.py)."""
        wav = F.pad(wav.to(self.model.feature_proj.weight.dtype), (self.left_pad_samples, 0))  # as above
        with captured_outputs(self.model.encoder.positional_embedding) as positional:
            hidden, _ = self.model(wav)
        return TeacherOutput(positional=positional[0][0], layers=[hidden[i - 1] for i in self.layers])


def load_teacher(
    checkpoint: str | Path, layers: Sequence[int], *, trust_pickle: bool = False, given_as: str = "teacher.checkpoint"
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the frozen teacher named by a checkpoint file; returns it and the checkpoint dict (for student init).

    The file is read by the streaming WavLM's loader: weights only unless trust_pickle (teacher.trust_pickle).
    """
    try:
        ckpt = read_checkpoint(checkpoint, trust_pickle=trust_pickle, given_as=given_as)
    except CheckpointError as exc:
        raise TeacherError(str(exc)) from exc
    where = f"teacher checkpoint {checkpoint}"
    if not isinstance(ckpt, dict):
        raise TeacherError(f"{where}: expected a dict checkpoint, found {type(ckpt).__name__}")
    if is_s3prl_wavlm_checkpoint(ckpt):
        return S3PRLWavLMTeacher.from_checkpoint(ckpt, layers, where), ckpt
    if is_streaming_wavlm_checkpoint(ckpt):
        return StreamingWavLMTeacher.from_checkpoint(ckpt, layers, where), ckpt
    raise TeacherError(
        f"{where}: unknown layout (top-level keys {sorted(map(str, ckpt))[:10]}). Expected a Microsoft/s3prl WavLM "
        'checkpoint {"cfg": {...WavLMConfig fields...}, "model": state_dict} (e.g. WavLM-Large.pt) or a streaming '
        'WavLM checkpoint {"student_state_dict": ..., "model_config": {"wavlm": {...}}}'
    )
