"""How closely a streamed student follows its teacher: per-layer cosine similarity and MSE per chunk size.

For every utterance of a manifest the teacher runs once on the whole utterance (offline, on the student's
frame grid, see alignment.py) and the student streams it in chunks of each size, exactly as the s3prl
hub entries do (``new_state`` / ``feed`` / ``flush``). Similarities are averaged over all frames of all
utterances. The report also gives, per chunk size, the largest difference between the streamed features
and the student's one-shot forward (0 up to float error for an exact streaming model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import soundfile as sf
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nemo_streaming_ssl.core.exactness import difference
from nemo_streaming_ssl.core.protocol import stream_audio

# The chunk sizes of the streaming WavLM hub entries: _200ms ... _1000ms and _offline (10 s chunks).
HUB_CHUNK_MS = (200, 400, 600, 800, 1000, 10000)


@dataclass
class LayerSums:
    """Running frame-weighted sums for one (chunk size, layer) pair."""

    cosine: float = 0.0
    squared_error: float = 0.0  # sum over frames of the per-frame mean squared error over features
    frames: int = 0

    def add(self, student: Tensor, teacher: Tensor) -> None:
        """student, teacher: [T, D]."""
        student, teacher = student.double(), teacher.double()
        self.cosine += F.cosine_similarity(student, teacher, dim=-1).sum().item()
        self.squared_error += (student - teacher).square().mean(dim=-1).sum().item()
        self.frames += student.shape[0]


@dataclass
class FidelityReport:
    chunk_ms: list[int]
    teacher_layers: list[int]
    num_utterances: int = 0
    sums: dict[int, list[LayerSums]] = field(default_factory=dict)
    max_abs_diff_vs_one_shot: dict[int, float] = field(default_factory=dict)

    def cosine(self, chunk_ms: int) -> list[float]:
        return [s.cosine / s.frames for s in self.sums[chunk_ms]]

    def mse(self, chunk_ms: int) -> list[float]:
        return [s.squared_error / s.frames for s in self.sums[chunk_ms]]

    def to_dict(self) -> dict:
        return {
            "num_utterances": self.num_utterances,
            "teacher_layers": self.teacher_layers,
            "chunks": {
                str(ms): {
                    "cosine": self.cosine(ms),
                    "mse": self.mse(ms),
                    "max_abs_diff_vs_one_shot": self.max_abs_diff_vs_one_shot[ms],
                }
                for ms in self.chunk_ms
            },
        }

    def table(self) -> str:
        """Plain-text table: one row per student layer, cosine and MSE per chunk size."""
        head = f"{'layer':>12} " + " ".join(f"{f'{ms} ms cos':>12} {f'{ms} ms mse':>12}" for ms in self.chunk_ms)
        rows = [head, "-" * len(head)]
        for k, teacher_layer in enumerate(self.teacher_layers):
            cells = " ".join(f"{self.cosine(ms)[k]:>12.4f} {self.mse(ms)[k]:>12.4g}" for ms in self.chunk_ms)
            rows.append(f"{f'{k + 1} (T{teacher_layer})':>12} {cells}")
        rows.append(
            f"{'|stream-1shot|':>12} "
            + " ".join(f"{self.max_abs_diff_vs_one_shot[ms]:>25.2e}" for ms in self.chunk_ms)
        )
        return "\n".join(rows)

    def plot(self, path: Path) -> Path:
        """PNG: cosine similarity (left) and MSE (right) per layer, one line per chunk size."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        layers = list(range(1, len(self.teacher_layers) + 1))
        fig, (ax_cos, ax_mse) = plt.subplots(1, 2, figsize=(11, 4.2))
        for i, ms in enumerate(self.chunk_ms):
            label = "offline (10 s chunks)" if ms == 10000 else f"{ms} ms chunks"
            style = dict(marker="o", linestyle=("-", "--", "-.", ":")[i % 4], label=label)
            ax_cos.plot(layers, self.cosine(ms), **style)
            ax_mse.plot(layers, self.mse(ms), **style)
        names = [f"{k}\n(T{t})" for k, t in zip(layers, self.teacher_layers)]
        for ax, title in ((ax_cos, "cosine similarity to teacher"), (ax_mse, "MSE to teacher")):
            ax.set_xticks(layers, names)
            ax.set_xlabel("student layer (teacher layer)")
            ax.set_title(title)
            ax.grid(alpha=0.3)
        ax_cos.legend(fontsize=8)
        worst = max(self.max_abs_diff_vs_one_shot.values())
        fig.suptitle(
            f"streamed student vs offline teacher, {self.num_utterances} utterances "
            f"(max |streamed - one-shot student| over all chunk sizes: {worst:.1e}; lines coincide when exact)",
            fontsize=10,
        )
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


@torch.no_grad()
def fidelity_report(
    student: nn.Module,
    teacher: nn.Module,
    audio_paths: Sequence[str],
    chunk_ms: Sequence[int] = HUB_CHUNK_MS,
    sample_rate: int = 16000,
    max_seconds: float | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> FidelityReport:
    """Compare the streamed ``student`` with the offline ``teacher`` on each file (first ``max_seconds`` of it)."""
    from tqdm import tqdm

    student = student.to(device).eval()
    teacher = teacher.to(device).eval()
    report = FidelityReport(list(chunk_ms), list(teacher.layers))
    report.sums = {ms: [LayerSums() for _ in teacher.layers] for ms in chunk_ms}
    report.max_abs_diff_vs_one_shot = {ms: 0.0 for ms in chunk_ms}
    for path in tqdm(audio_paths, desc="utterances", disable=not progress):
        audio, _ = sf.read(path, dtype="float32", frames=-1 if max_seconds is None else int(max_seconds * sample_rate))
        wav = torch.from_numpy(audio)[None].to(device)
        targets = teacher(wav).layers
        one_shot, _ = student(wav)
        frames = math.ceil(wav.shape[1] / student.config.hop_samples)
        for ms in chunk_ms:
            streamed = stream_audio(student, wav[0], round(ms * sample_rate / 1000), sample_rate=sample_rate)[0]
            if streamed.frames.shape[0] != frames:
                raise RuntimeError(f"{path}: {ms} ms chunks gave {streamed.frames.shape[0]} frames, expected {frames}")
            for k, (s, t) in enumerate(zip(streamed.hidden_states, targets)):
                report.sums[ms][k].add(s, t[0])
            diff = difference(list(streamed.hidden_states), [o[0] for o in one_shot]).max_abs
            report.max_abs_diff_vs_one_shot[ms] = max(report.max_abs_diff_vs_one_shot[ms], diff)
        report.num_utterances += 1
    return report
