"""Does streaming NEST pretraining pay off in CTC fine-tuning? Pretrained vs random init, everything else equal.

Arms, paired by seed k:

* ``pretrained``: a given streaming NEST ``.nemo`` (pretraining seed k);
* ``random``: the same model untrained, built as ``benefit.untrained`` builds the SSL-benefit ``random`` arm
  (seed k), saved as a ``.nemo`` and refused unless its config equals the pretrained one's (data sections aside).

Both go through the project's fine-tuning path (``asr.finetune.build_finetune_model``, the shipped
``fastconformer_ctc_streaming_finetune`` config) with one subword vocabulary built once from the training
transcripts, the same steps, batch, lr schedule and fine-tuning seed k: the CTC decoder starts from the same
weights and sees the same batches in both arms of a pair. Labeled data: a fresh espeak-ng corpus (its own
seed, no utterance of the pretraining corpus), split by voice: validation voices never occur in fine-tuning.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import OmegaConf

from ..config import compose_config
from ..data.corpus import VOICES, make_corpus, utterance_specs
from ..data.manifest import read_manifest, write_manifest
from ..bench import envelope, machine, now, write_results
from .benefit import ARMS, BenefitSettings, LossRecorder, _cached, _spread, untrained

FINETUNE_CONFIG = "fastconformer_ctc_streaming_finetune"
PAYOFF_ARMS = ("pretrained", "random")
METRICS = ("val_loss", "wer", "cer")


@dataclass
class PayoffSettings:
    """Everything that defines a run (written to the JSON)."""

    out_dir: str
    data_dir: str
    nemo_files: tuple[str, ...]  # the pretrained arm, one .nemo per pretraining seed
    seeds: tuple[int, ...]  # seed k: random-init seed and fine-tuning seed of the pair (pretrained k, random k)
    # How the pretrained models were made: the random arm is composed from these, then checked against them.
    preset: str = "tiny"
    mode: str = "causal"
    overrides: tuple[str, ...] = ()
    max_steps: int = 600
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 60
    min_lr: float = 1e-5
    val_every: int = 50
    vocab_size: int = 256  # upper bound for the SentencePiece vocabulary
    labeled_utterances: int = 400
    labeled_seed: int = 1  # the pretraining corpus uses seed 0
    val_voices: tuple[str, ...] = ("en-us+f2", "en-gb+m3")
    progress: bool = True


class CurveRecorder(pl.Callback):
    """Validation CTC loss, WER and CER at step 0, every ``every`` steps and at the last step."""

    def __init__(self, every: int):
        self.every = every
        self.points: list[dict[str, float]] = []
        self.seconds = 0.0

    def on_train_start(self, trainer, pl_module):
        self._record(0, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every == 0 or step == trainer.max_steps:
            self._record(step, pl_module)

    def _record(self, step: int, model) -> None:
        started = time.perf_counter()
        self.points.append({"step": step, **evaluate(model)})
        model.train()
        self.seconds += time.perf_counter() - started


@torch.no_grad()
def evaluate(model) -> dict[str, float]:
    """Per-utterance mean CTC loss, corpus WER and CER (NeMo's ``word_error_rate``) of greedy decoding on the
    validation loader, in eval mode (no SpecAugment, no dropout)."""
    from nemo.collections.asr.metrics.wer import word_error_rate

    model.eval()
    loss_sum, count, hypotheses, references = 0.0, 0, [], []
    for signal, signal_len, tokens, tokens_len in model.val_dataloader():
        log_probs, encoded_len, _ = model.forward(input_signal=signal, input_signal_length=signal_len)
        loss = model.loss(log_probs=log_probs, targets=tokens, input_lengths=encoded_len, target_lengths=tokens_len)
        loss_sum += float(loss) * len(signal)  # ctc_reduction mean_batch: the batch's mean per-utterance loss
        count += len(signal)
        hyps = model.decoding.ctc_decoder_predictions_tensor(log_probs, decoder_lengths=encoded_len)
        hypotheses += [h.text for h in hyps]
        references += [model.tokenizer.ids_to_text(t[:n].tolist()) for t, n in zip(tokens, tokens_len)]
    return {
        "val_loss": loss_sum / count,
        "wer": word_error_rate(hypotheses, references),
        "cer": word_error_rate(hypotheses, references, use_cer=True),
    }


def prepare_labeled_data(s: PayoffSettings) -> dict[str, Path]:
    """A fresh espeak-ng corpus split by voice (recovered from the corpus seed): fine-tuning train and validation."""
    unknown = sorted(set(s.val_voices) - set(VOICES))
    if unknown or not set(VOICES) - set(s.val_voices):
        raise ValueError(f"val_voices must be a proper subset of {list(VOICES)}; unknown {unknown}")
    folder = Path(s.data_dir) / f"labeled_{s.labeled_utterances}_seed{s.labeled_seed}_by_voice"
    definition = {"utterances": s.labeled_utterances, "seed": s.labeled_seed, "val_voices": list(s.val_voices)}

    def build() -> dict[str, Path]:
        made = make_corpus(folder / "corpus", s.labeled_utterances, num_noise=0, seed=s.labeled_seed, val_fraction=0.0, progress=s.progress)
        voice = {spec.utt_id: spec.voice for spec in utterance_specs(s.labeled_utterances, s.labeled_seed)}
        entries = read_manifest(made["train"])
        val = [e for e in entries if voice[Path(e.audio_filepath).stem] in s.val_voices]
        train = [e for e in entries if voice[Path(e.audio_filepath).stem] not in s.val_voices]
        if not val or not train:
            raise ValueError(f"{len(train)} training and {len(val)} validation utterances with val_voices {list(s.val_voices)}; make more")
        return {"train": write_manifest(train, folder / "train.json"), "val": write_manifest(val, folder / "val.json")}

    return _cached(folder, definition, build)


def finetune_config(s: PayoffSettings, data: dict[str, Path], pretrained_nemo: Path, seed: int, tokenizer_dir: str | None):
    """The shipped fine-tuning config with this benchmark's data, schedule and vocabulary."""
    overrides = [
        f"seed={seed}",
        f"pretrained_nemo={pretrained_nemo}",
        f"model.train_ds.manifest_filepath={data['train']}",
        f"model.validation_ds.manifest_filepath={data['val']}",
        f"model.train_ds.batch_size={s.batch_size}",
        f"model.validation_ds.batch_size={s.batch_size}",
        f"model.optim.lr={s.lr}",
        f"model.optim.sched.warmup_steps={s.warmup_steps}",
        f"model.optim.sched.min_lr={s.min_lr}",
        f"tokenizer_build.vocab_size={s.vocab_size}",
        f"tokenizer_build.dir={Path(s.out_dir) / 'tokenizer'}",
        "model.log_prediction=false",
    ]
    if tokenizer_dir is not None:
        overrides.append(f"model.tokenizer.dir={tokenizer_dir}")
    return compose_config(FINETUNE_CONFIG, overrides)


def shared_vocabulary(s: PayoffSettings, data: dict[str, Path], any_nemo: Path) -> str:
    """Build the SentencePiece vocabulary once from the training transcripts; every run reuses its folder."""
    from ..asr.finetune import prepare_vocabulary, validate_asr_manifests

    cfg = finetune_config(s, data, any_nemo, seed=0, tokenizer_dir=None)
    prepare_vocabulary(cfg, validate_asr_manifests(cfg))
    return str(cfg.model.tokenizer.dir)


def _model_definition(cfg) -> dict:
    """A NEST model config without its data sections (the random arm is built without them)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in container.items() if k not in ("train_ds", "validation_ds", "test_ds")}


def save_random_init(s: PayoffSettings, seed: int, pretrained_nemo: str, path: Path) -> Path:
    """The ``random`` arm of ``ssl_benefit`` (same builder, same seed), saved as a ``.nemo``; refused unless its
    config equals the pretrained model's."""
    from ..models import StreamingNESTModel

    benefit = BenefitSettings(out_dir=s.out_dir, data_dir=s.data_dir, preset=s.preset, mode=s.mode, overrides=s.overrides)
    model = untrained(ARMS["random"], benefit, seed)
    ours = _model_definition(model.cfg)
    theirs = _model_definition(StreamingNESTModel.restore_from(pretrained_nemo, return_config=True))
    if ours != theirs:
        differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        raise ValueError(
            f"the random init (preset={s.preset} mode={s.mode} overrides={list(s.overrides)}) differs from "
            f"{pretrained_nemo} in model.{differ}; give the preset, mode and overrides it was pretrained with"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(path))
    return path


def _sha1(tensor: torch.Tensor) -> str:
    return hashlib.sha1(tensor.detach().cpu().numpy().tobytes()).hexdigest()


def finetune(s: PayoffSettings, data: dict[str, Path], init_nemo: Path, seed: int, tokenizer_dir: str) -> dict[str, Any]:
    """Fine-tune CTC from ``init_nemo`` for ``max_steps``; the curves, losses and what makes runs comparable."""
    from ..asr.finetune import build_finetune_model
    from ..console import StepProgressBar

    started = time.perf_counter()
    cfg = finetune_config(s, data, init_nemo, seed, tokenizer_dir)
    pl.seed_everything(seed, verbose=False)
    losses, curves = LossRecorder(), CurveRecorder(s.val_every)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=s.max_steps,
        max_epochs=-1,
        limit_val_batches=0,  # CurveRecorder validates
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=s.progress,
        enable_model_summary=False,
        callbacks=[losses, curves, *([StepProgressBar()] if s.progress else [])],
    )
    model = build_finetune_model(cfg, trainer)
    decoder_init = _sha1(model.decoder.decoder_layers[0].weight)
    trainer.fit(model)
    return {
        "init_nemo": str(init_nemo),
        "seed": seed,
        "steps": trainer.global_step,
        "vocabulary": list(model.decoder.vocabulary),
        "decoder_init_sha1": decoder_init,
        "curve": curves.points,
        "train_losses": losses.losses,
        "eval_s": curves.seconds,
        "run_s": time.perf_counter() - started,
    }


def summarize(runs: list[dict]) -> dict[str, dict]:
    """Per arm and metric: final and best value over the curve, and the mean over the curve after step 0
    (lower when an arm gets there sooner); spread over seeds. ``paired_difference``: pretrained - random."""
    def values(run: dict) -> dict[str, float]:
        out = {}
        for metric in METRICS:
            curve = [p[metric] for p in run["curve"]]
            out |= {f"{metric}_final": curve[-1], f"{metric}_best": min(curve), f"{metric}_curve_mean": statistics.mean(curve[1:] or curve)}
        return out

    per_run = {arm: [values(r) for r in runs if r["arm"] == arm] for arm in PAYOFF_ARMS}
    summary = {arm: {"runs": len(rows), **{k: _spread([row[k] for row in rows]) for k in rows[0]}} for arm, rows in per_run.items() if rows}
    if all(per_run.values()):
        by_seed = {arm: {r["seed"]: values(r) for r in runs if r["arm"] == arm} for arm in PAYOFF_ARMS}
        pairs = sorted(set(by_seed["pretrained"]) & set(by_seed["random"]))
        keys = list(by_seed["random"][pairs[0]])
        summary["paired_difference"] = {
            "runs": len(pairs),
            **{k: _spread([by_seed["pretrained"][seed][k] - by_seed["random"][seed][k] for seed in pairs]) for k in keys},
        }
    return summary


def format_table(summary: dict[str, dict]) -> str:
    """Rows: metric; columns: arms and the paired difference."""
    columns = list(summary)
    head = f"{'metric':<20}" + "".join(f"{c + ' (n=' + str(summary[c]['runs']) + ')':<34}" for c in columns)
    lines = [head, "-" * len(head)]

    def cell(v: dict, signed: bool) -> str:
        f = "+.3f" if signed else ".3f"
        return f"{v['mean']:{f}} ±{v['std']:.3f} [{v['min']:{f}}, {v['max']:{f}}]"

    for metric in METRICS:
        for kind in ("final", "best", "curve_mean"):
            key = f"{metric}_{kind}"
            cells = "".join(f"{cell(summary[c][key], c == 'paired_difference'):<34}" for c in columns)
            lines.append(f"{metric + ' ' + kind.replace('_', ' '):<20}{cells}".rstrip())
    lines.append("mean ±std [min, max] over fine-tuning seeds; val loss: CTC per utterance (nats); WER, CER: greedy, corpus level")
    lines.append("best: minimum over the validation points; curve mean: mean over the points after step 0 (lower = sooner)")
    if "paired_difference" in summary:
        lines.append("paired_difference: pretrained - random with the same seed (negative = pretraining better)")
    return "\n".join(lines)


def plot(runs: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = [("val_loss", "validation CTC loss (nats)"), ("wer", "validation WER"), ("cer", "validation CER")]
    for (metric, label), ax in zip(panels, axes.flat):
        for arm, colour in zip(PAYOFF_ARMS, ("tab:blue", "tab:orange")):
            mine = [r for r in runs if r["arm"] == arm]
            if not mine:
                continue
            steps = [p["step"] for p in mine[0]["curve"]]
            values = np.array([[p[metric] for p in r["curve"]] for r in mine])
            ax.plot(steps, values.mean(axis=0), color=colour, marker=".", label=f"{arm} (mean of {len(mine)})")
            ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=colour, alpha=0.2, label=f"{arm} min-max")
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    ax = axes.flat[3]
    for arm, colour in zip(PAYOFF_ARMS, ("tab:blue", "tab:orange")):
        mine = np.array([r["train_losses"] for r in runs if r["arm"] == arm])
        if len(mine):
            window = max(1, mine.shape[1] // 30)
            smooth = np.array([np.convolve(row, np.ones(window) / window, mode="valid") for row in mine])
            steps = np.arange(window, mine.shape[1] + 1)
            ax.plot(steps, smooth.mean(axis=0), color=colour, label=f"{arm} (mean, {window}-step average)")
            ax.fill_between(steps, smooth.min(axis=0), smooth.max(axis=0), color=colour, alpha=0.2)
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("train CTC loss (SpecAugment on)")
    ax.legend(fontsize=7)
    fig.suptitle(textwrap.fill(title, 120), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_payoff(s: PayoffSettings, command: str = "") -> dict[str, Any]:
    """Fine-tune every pair (pretrained k, random k); write results.json (the benchmarks' envelope,
    ``nemo_streaming_ssl.bench``), table.txt and finetune_curves.png; returns the envelope."""
    if len(s.nemo_files) != len(s.seeds):
        raise ValueError(f"one seed per pretrained .nemo: {len(s.nemo_files)} files, seeds {list(s.seeds)}")
    out = Path(s.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started, date, host = time.perf_counter(), now(), machine()
    data = prepare_labeled_data(s)
    stages = {"data": time.perf_counter() - started}
    tokenizer_dir = shared_vocabulary(s, data, Path(s.nemo_files[0]))
    runs = []
    for nemo, seed in zip(s.nemo_files, s.seeds):
        sidecar = Path(f"{nemo}.pretraining.json")
        pretraining = json.loads(sidecar.read_text()) if sidecar.is_file() else None
        if pretraining is not None and pretraining.get("seed", seed) != seed:
            raise ValueError(f"{nemo} was pretrained with seed {pretraining['seed']}, paired here with seed {seed}")
        random_nemo = save_random_init(s, seed, nemo, out / "models" / f"random_seed{seed}.nemo")
        for arm, init in (("pretrained", Path(nemo)), ("random", random_nemo)):
            run = {"arm": arm, **finetune(s, data, init, seed, tokenizer_dir)}
            if arm == "pretrained" and pretraining is not None:
                run["pretraining"] = {k: v for k, v in pretraining.items() if k != "train_losses"}
            runs.append(run)
            if s.progress:
                last = run["curve"][-1]
                print(f"{arm} seed {seed}: step {last['step']} val loss {last['val_loss']:.3f} WER {last['wer']:.3f} "
                      f"CER {last['cer']:.3f} ({run['run_s']:.0f} s, {run['eval_s']:.0f} s of it validating)")
    summary = summarize(runs)
    table = format_table(summary)
    manifests = {split: read_manifest(path) for split, path in data.items()}
    results = {
        "data": {
            split: {"manifest": str(data[split]), "utterances": len(entries), "hours": sum(e.duration for e in entries) / 3600}
            for split, entries in manifests.items()
        },
        "train_voices": sorted(set(VOICES) - set(s.val_voices)),
        "vocabulary": runs[0]["vocabulary"],
        "runs": runs,
        "summary": summary,
        "table": table,
        "stage_s": stages,
    }
    result = envelope("finetune_payoff", command, date, host, asdict(s), results, time.perf_counter() - started)
    write_results(out, result)
    (out / "table.txt").write_text(table + "\n")
    title = (
        f"CTC fine-tuning, {s.max_steps} steps, batch {s.batch_size}, lr {s.lr:g} (warmup {s.warmup_steps}, cosine); "
        f"init: preset={s.preset} mode={s.mode} {' '.join(s.overrides)}; band = min-max over {len(s.seeds)} seeds"
    )
    plot(runs, out / "finetune_curves.png", title)
    return result
