"""Does NEST pretraining help? Pretrain each arm, freeze it, probe keyword identity from every layer.

Arms share the architecture (preset), data and budget:

* ``streaming``: our streaming NEST (mode causal unless told), the default ``earliest_complete`` targets;
* ``random``: the same model, untrained (same seeds);
* ``same_index``: streaming NEST with ``model.target_alignment=same_index`` (token k scored at frame k);
* ``offline``: NeMo's bidirectional NEST (``nest_fast-conformer_offline``), a ceiling, not streamable;
* ``offline_random``: that offline model untrained (its baseline).

Pretraining sees only the unlabeled espeak-ng corpus (``data.corpus``); the keyword clips are synthesized
apart, with keywords outside the corpus vocabulary, and probe-test speakers unseen by the probe and by
pretraining. The probe (``probe.py``) is trained identically for every arm, layer and seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import OmegaConf

from ..bench import envelope, machine, now, write_results
from ..config import compose_config
from ..data.corpus import make_corpus
from ..streaming.untrained import OFFLINE_CONFIG, STREAMING_CONFIG
from .features import layer_features, load_audio
from .keywords import SNR_DB, build_keyword_task, read_clips
from .probe import ProbeSettings, probe_accuracy


@dataclass(frozen=True)
class Arm:
    name: str
    config_name: str
    overrides: tuple[str, ...] = ()
    pretrain: bool = True
    streaming: bool = True  # takes the mode override


ARMS = {
    "streaming": Arm("streaming", STREAMING_CONFIG),
    "random": Arm("random", STREAMING_CONFIG, pretrain=False),
    "same_index": Arm("same_index", STREAMING_CONFIG, ("model.target_alignment=same_index",)),
    "offline": Arm("offline", OFFLINE_CONFIG, streaming=False),
    # The offline encoder untrained: offline differs from streaming in its input too (utterance-normalized
    # log-mels, BatchNorm, both directions), so its gain is measured against its own random init.
    "offline_random": Arm("offline_random", OFFLINE_CONFIG, pretrain=False, streaming=False),
}


@dataclass
class BenefitSettings:
    """Everything that defines a run (written to the JSON)."""

    out_dir: str
    data_dir: str
    arms: tuple[str, ...] = tuple(ARMS)
    preset: str = "tiny"
    mode: str = "causal"
    overrides: tuple[str, ...] = ()  # Hydra overrides for every arm (lr, masking, size keys...)
    seeds: tuple[int, ...] = (0,)
    max_steps: int = 200
    batch_size: int = 8
    corpus_utterances: int = 200
    corpus_noise: int = 16
    keyword_clips_per_speaker: int = 1
    keyword_snr_db: Optional[tuple[float, float]] = SNR_DB  # None: clean clips
    keywords: Optional[tuple[str, ...]] = None  # None: keywords.KEYWORDS
    accents: Optional[tuple[str, ...]] = None  # None: keywords.ACCENTS
    train_variants: Optional[tuple[str, ...]] = None
    test_variants: Optional[tuple[str, ...]] = None
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    nemo_files: dict[str, list[str]] = field(default_factory=dict)  # arm -> given .nemo files (no pretraining)
    progress: bool = True


class LossRecorder(pl.Callback):
    """Training loss of every step."""

    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def _cached(folder: Path, definition: dict, build) -> dict[str, Path]:
    """Build data into ``folder`` once per definition (``made.json`` records it); a changed definition rebuilds."""
    stamp = folder / "made.json"
    if stamp.is_file():
        made = json.loads(stamp.read_text())
        if made["definition"] == definition:
            return {k: Path(v) for k, v in made["manifests"].items()}
    manifests = build()
    stamp.write_text(json.dumps({"definition": definition, "manifests": {k: str(v) for k, v in manifests.items()}}))
    return manifests


def prepare_data(s: BenefitSettings) -> tuple[dict[str, Path], dict[str, Path]]:
    """The pretraining corpus (train/val/noise manifests) and the keyword task (train/test clip manifests)."""
    data = Path(s.data_dir)
    corpus_def = {"utterances": s.corpus_utterances, "noise": s.corpus_noise, "seed": 0}
    corpus = _cached(
        data / f"corpus_{s.corpus_utterances}",
        corpus_def,
        lambda: make_corpus(data / f"corpus_{s.corpus_utterances}", s.corpus_utterances, s.corpus_noise, seed=0, progress=s.progress),
    )
    task_args = {
        k: v
        for k, v in dict(
            keywords=s.keywords, accents=s.accents, train_variants=s.train_variants, test_variants=s.test_variants
        ).items()
        if v is not None
    }
    snr = list(s.keyword_snr_db) if s.keyword_snr_db is not None else None
    task_def = {"clips_per_speaker": s.keyword_clips_per_speaker, "snr_db": snr, "seed": 1, **{k: list(v) for k, v in task_args.items()}}
    task_dir = data / f"keywords_{hashlib.sha1(json.dumps(task_def, sort_keys=True).encode()).hexdigest()[:8]}"
    task = _cached(
        task_dir,
        task_def,
        lambda: build_keyword_task(
            task_dir, clips_per_speaker=s.keyword_clips_per_speaker, snr_db=s.keyword_snr_db, seed=1, progress=s.progress, **task_args
        ),
    )
    return corpus, task


def arm_overrides(arm: Arm, s: BenefitSettings) -> list[str]:
    mode = [f"mode={s.mode}"] if arm.streaming else []
    return [f"preset={s.preset}", *mode, *arm.overrides, *s.overrides]


def data_overrides(corpus: dict[str, Path], batch_size: int) -> list[str]:
    """Point a config at the corpus; load in the main process (CPU runs, tests)."""
    out = [
        f"model.train_ds.manifest_filepath={corpus['train']}",
        f"model.validation_ds.manifest_filepath={corpus['val']}",
        f"model.train_ds.noise_manifest={corpus['noise']}",
        f"model.validation_ds.noise_manifest={corpus['noise']}",
    ]
    for split in ("train_ds", "validation_ds"):
        out += [f"model.{split}.batch_size={batch_size}", f"model.{split}.num_workers=0", f"model.{split}.pin_memory=false"]
    return out


@torch.no_grad()
def token_entropy_nats(model, clips: list[np.ndarray]) -> dict[str, float]:
    """Unigram entropy of the quantizer's targets on ``clips`` and the classes used: the loss of a model that
    predicts the token marginals without looking at the input (below log(num_classes) if tokens are skewed)."""
    model.eval()
    counts = torch.zeros(int(model.cfg.num_classes))
    for clip in clips:
        audio = torch.from_numpy(clip).unsqueeze(0)
        steps = model.encoder.subsampling_factor
        if model.streaming:  # the quantizer's own input: raw log-mels (no fixed input map), target_normalize
            feats, feat_len = model.target_log_mels(audio, torch.tensor([len(clip)]))
            feats = model._target_features(feats, feat_len)
        else:
            feats, feat_len = model.preprocessor(input_signal=audio, length=torch.tensor([len(clip)]))
        whole = int(feat_len[0]) // steps * steps
        _, tokens = model.quantizer(input_signal=feats[:, :, :whole])
        counts += torch.bincount(tokens.reshape(-1), minlength=counts.numel()).float()
    p = counts / counts.sum()
    nz = p[p > 0]
    return {"unigram_entropy_nats": float(-(nz * nz.log()).sum()), "classes_used": int((counts > 0).sum())}


def _validation_loss(trainer: pl.Trainer, model) -> float:
    results = trainer.validate(model, verbose=False)
    return float(results[0]["val_loss"])


def pretrain(arm: Arm, s: BenefitSettings, corpus: dict[str, Path], seed: int, out_path: Path):
    """Pretrain one arm with one seed for ``max_steps`` on CPU; save the .nemo. Returns (model, record)."""
    from ..console import StepProgressBar
    from ..models import StreamingNESTModel

    cfg = compose_config(arm.config_name, [*arm_overrides(arm, s), *data_overrides(corpus, s.batch_size)])
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    pl.seed_everything(seed, verbose=False)
    recorder = LossRecorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=s.max_steps,
        max_epochs=-1,
        check_val_every_n_epoch=10**6,  # validation only before and after training
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=s.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[recorder, *([StepProgressBar()] if s.progress else [])],
    )
    model = StreamingNESTModel(cfg.model, trainer=trainer)
    val_before = _validation_loss(trainer, model)
    trainer.fit(model)
    val_after = _validation_loss(trainer, model)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(out_path))
    window = max(1, min(20, len(recorder.losses) // 5))
    record = {
        "nemo": str(out_path),
        "seed": seed,
        "steps": len(recorder.losses),
        "train_loss_first": statistics.mean(recorder.losses[:window]),
        "train_loss_last": statistics.mean(recorder.losses[-window:]),
        "val_loss_before": val_before,
        "val_loss_after": val_after,
        "log_num_classes": math.log(int(cfg.model.num_classes)),
        "train_losses": recorder.losses,
    }
    # Beside the .nemo, so that a later run given this file (--nemo) still reports how it was pretrained.
    Path(f"{out_path}.pretraining.json").write_text(json.dumps(record))
    return model.eval(), record


def untrained(arm: Arm, s: BenefitSettings, seed: int):
    from ..models import StreamingNESTModel
    from ..streaming.untrained import compose_model_config

    torch.manual_seed(seed)
    return StreamingNESTModel(compose_model_config(arm_overrides(arm, s), arm.config_name)).eval()


def probe_layers(model, task_clips: dict[str, list], task_audio: dict[str, list[np.ndarray]], s: BenefitSettings) -> list[float]:
    """Keyword accuracy on the probe-test speakers from each layer's pooled features: (L+1,) in [0, 1]."""
    feats = {split: layer_features(model, task_audio[split], progress=s.progress) for split in ("train", "test")}
    labels = {split: np.array([c.label for c in task_clips[split]]) for split in ("train", "test")}
    return [
        probe_accuracy(feats["train"][layer], labels["train"], feats["test"][layer], labels["test"], s.probe)
        for layer in range(feats["train"].shape[0])
    ]


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def summarize(runs: list[dict]) -> dict[str, dict]:
    """Per arm: best-layer (chosen per run on the test set, optimistic for every arm alike) and last-layer accuracy."""
    summary = {}
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine = [r for r in runs if r["arm"] == arm]
        accs = np.array([r["layer_accuracy"] for r in mine])
        summary[arm] = {
            "runs": len(mine),
            "best_layer": _spread([float(a.max()) for a in accs]),
            "last_layer": _spread([float(a[-1]) for a in accs]),
            "per_layer_mean": accs.mean(axis=0).tolist(),
            "per_layer_std": accs.std(axis=0, ddof=1).tolist() if len(mine) > 1 else [0.0] * accs.shape[1],
        }
        summary[arm]["target_entropy_nats"] = _spread([r["targets"]["unigram_entropy_nats"] for r in mine])
        pre = [r["pretraining"] for r in mine if r.get("pretraining")]
        if pre:
            summary[arm]["val_loss_after"] = _spread([p["val_loss_after"] for p in pre])
    return summary


def format_table(summary: dict[str, dict], chance: float) -> str:
    """The result table, from the measurements."""
    width = max(12, *(len(arm) + 2 for arm in summary))
    head = f"{'arm':<{width}}{'runs':>5}  {'best layer acc':<30}{'last layer acc':<30}{'val loss':<16}{'token entropy':<13}"
    lines = [head, "-" * len(head)]
    for arm, row in summary.items():
        cells = []
        for key in ("best_layer", "last_layer"):
            v = row[key]
            cells.append(f"{v['mean']:.3f} ±{v['std']:.3f} [{v['min']:.3f}, {v['max']:.3f}]")
        loss = row.get("val_loss_after")
        loss_cell = f"{loss['mean']:.3f} ±{loss['std']:.3f}" if loss else "-"
        entropy = row.get("target_entropy_nats")  # absent from results written before the column existed
        entropy_cell = f"{entropy['mean']:.3f}" if entropy else "-"
        lines.append(f"{arm:<{width}}{row['runs']:>5}  {cells[0]:<30}{cells[1]:<30}{loss_cell:<16}{entropy_cell:<13}")
    lines.append(f"accuracy: mean ±std [min, max] over runs (pretraining seeds); chance {chance:.3f}")
    lines.append(
        "val loss: masked-token cross-entropy after pretraining (nats); token entropy: unigram entropy of the "
        "targets, the loss of predicting token frequencies alone"
    )
    return "\n".join(lines)


def plot(summary: dict[str, dict], chance: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, row in summary.items():
        layers = np.arange(len(row["per_layer_mean"]))
        ax.errorbar(layers, row["per_layer_mean"], yerr=row["per_layer_std"], marker="o", capsize=3, label=f"{arm} (n={row['runs']})")
    ax.axhline(chance, color="grey", linestyle=":", label="chance")
    ax.set_xlabel("layer (0 = subsampled pre-encode output)")
    ax.set_xticks(np.arange(max(len(row["per_layer_mean"]) for row in summary.values())))
    ax.set_ylabel("keyword probe accuracy (unseen voices)")
    ax.set_ylim(0, 1)
    ax.set_title(textwrap.fill(title, 90), fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_benchmark(s: BenefitSettings, command: str = "") -> dict[str, Any]:
    """Run every arm and seed; write results.json (the benchmarks' envelope, ``nemo_streaming_ssl.bench``),
    probe_accuracy.png and table.txt under ``out_dir``; returns the envelope."""
    from tqdm import tqdm

    from ..models import StreamingNESTModel

    unknown = [a for a in [*s.arms, *s.nemo_files] if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; arms are {list(ARMS)}")
    out = Path(s.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}
    started, date, host = time.perf_counter(), now(), machine()

    t0 = time.perf_counter()
    corpus, task = prepare_data(s)
    task_clips = {split: read_clips(task[split]) for split in ("train", "test")}
    stages["data"] = time.perf_counter() - t0
    speakers = {split: {c.speaker for c in clips} for split, clips in task_clips.items()}
    if speakers["train"] & speakers["test"]:
        raise RuntimeError(f"probe-train and probe-test share speakers {sorted(speakers['train'] & speakers['test'])}")
    sample_rate = 16000
    task_audio = {split: load_audio([c.audio_filepath for c in clips], sample_rate) for split, clips in task_clips.items()}
    val_audio = load_audio([json.loads(line)["audio_filepath"] for line in Path(corpus["val"]).read_text().splitlines() if line.strip()], sample_rate)
    num_keywords = len({c.label for c in task_clips["train"]})

    jobs = []  # (arm, seed or None, given .nemo or None)
    for name in s.arms:
        given = s.nemo_files.get(name)
        jobs += [(ARMS[name], None, path) for path in given] if given else [(ARMS[name], seed, None) for seed in s.seeds]
    runs = []
    for arm, seed, given in tqdm(jobs, desc="arms x seeds", disable=not s.progress):
        run: dict[str, Any] = {"arm": arm.name, "seed": seed, "nemo": given}
        t0 = time.perf_counter()
        if given:
            model = StreamingNESTModel.restore_from(given, map_location="cpu").eval()
            sidecar = Path(f"{given}.pretraining.json")
            if sidecar.is_file():
                run["pretraining"] = json.loads(sidecar.read_text())
                run["seed"] = run["pretraining"].get("seed")
        elif arm.pretrain:
            model, run["pretraining"] = pretrain(arm, s, corpus, seed, out / "models" / f"{arm.name}_seed{seed}.nemo")
        else:
            model = untrained(arm, s, seed)
        run["pretrain_s"] = time.perf_counter() - t0
        run["targets"] = token_entropy_nats(model, val_audio)
        t0 = time.perf_counter()
        run["layer_accuracy"] = probe_layers(model, task_clips, task_audio, s)
        run["probe_s"] = time.perf_counter() - t0
        runs.append(run)
        if s.progress:
            accs = ", ".join(f"{a:.2f}" for a in run["layer_accuracy"])
            print(f"{arm.name} seed {seed}: layer accuracy [{accs}] ({run['pretrain_s']:.0f} s + {run['probe_s']:.0f} s)")

    summary = summarize(runs)
    chance = 1.0 / num_keywords
    table = format_table(summary, chance)
    results = {
        "task": {
            "num_keywords": num_keywords,
            "chance": chance,
            "train_clips": len(task_clips["train"]),
            "test_clips": len(task_clips["test"]),
            "train_speakers": sorted(speakers["train"]),
            "test_speakers": sorted(speakers["test"]),
        },
        "corpus": {k: str(v) for k, v in corpus.items()},
        "runs": runs,
        "summary": summary,
        "table": table,
        "stage_s": stages,
    }
    wall_s = time.perf_counter() - started
    write_results(out, envelope("ssl_benefit", command, date, host, asdict(s), results, wall_s))
    (out / "table.txt").write_text(table + "\n")
    title = f"preset={s.preset} mode={s.mode} steps={s.max_steps} corpus={s.corpus_utterances} utt; {' '.join(s.overrides)}"
    plot(summary, chance, out / "probe_accuracy.png", title)
    return envelope("ssl_benefit", command, date, host, asdict(s), results, wall_s)
