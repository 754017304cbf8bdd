"""Fine-tune a pretrained streaming NEST encoder into a cache-aware streaming CTC model.

Run it as a file (the nemo_toolkit wheel owns the top-level package name `examples`):

    python examples/asr/speech_to_text_finetune/finetune_streaming_ctc.py \
        pretrained_nemo=nest.nemo \
        model.train_ds.manifest_filepath=train.json model.validation_ds.manifest_filepath=val.json \
        trainer.max_steps=2000

Config: conf/fastconformer_ctc_streaming_finetune.yaml (subword vocabulary built from the training transcripts;
`--config-name fastconformer_ctc_streaming_finetune_char` for characters). Any key can be overridden.
Writes <exp_dir>/<name>/.../<name>.nemo (loads with stock `EncDecCTCModel.restore_from`), and prints the
validation CTC loss and WER before and after training and a streaming-vs-offline check.
Each run writes into its own dated folder; a reused folder (exp_manager.resume_if_exists=true or an explicit
exp_manager.version) must hold a run of the same pretrained model and model config, else the run stops
before anything is written, listing what differs.
"""

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import soundfile as sf
import torch
from omegaconf import DictConfig, OmegaConf

# Run as a file: make the project importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from nemo_streaming_ssl.cli_paths import MANIFEST, PRETRAINED_NEMO, exit_on_missing_paths  # noqa: E402

if __name__ == "__main__":  # before the NeMo imports below
    exit_on_missing_paths(sys.argv[1:], {"pretrained_nemo": PRETRAINED_NEMO, "manifest_filepath": MANIFEST})

from nemo.core.config import hydra_runner  # noqa: E402
from nemo.utils import logging  # noqa: E402
from nemo.utils.exp_manager import exp_manager  # noqa: E402

from nemo_streaming_ssl.asr.finetune import build_finetune_model, manifest_paths, pretrained_path  # noqa: E402
from nemo_streaming_ssl.asr.streaming import compare_streaming_with_offline, setup_cache_aware_streaming  # noqa: E402
from nemo_streaming_ssl.console import fold_nemo_config_dumps, progress_callbacks  # noqa: E402
from nemo_streaming_ssl.data.manifest import read_manifest  # noqa: E402
from nemo_streaming_ssl.run_record import RerunError, check_rerun, nemo_model_definition, record_run  # noqa: E402

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"


def validation_metrics(trainer: pl.Trainer, model) -> dict[str, float]:
    results = trainer.validate(model, verbose=False)
    return {k: float(v) for k, v in results[0].items()} if results else {}


def streaming_report(model, cfg: DictConfig) -> list[dict]:
    """NeMo's cache-aware streaming vs the offline forward on the first validation utterances."""
    entries = read_manifest(manifest_paths(cfg.model.validation_ds)[0])[: cfg.streaming_check.max_utterances]
    setup_cache_aware_streaming(model, longest_stream_s=max(entry.duration for entry in entries))
    rows = []
    for entry in entries:
        audio, _ = sf.read(entry.audio_filepath, dtype="float32")
        comparison = compare_streaming_with_offline(model, torch.from_numpy(audio))
        rows.append(
            {
                "audio_filepath": entry.audio_filepath,
                "reference": entry.text,
                "offline": comparison.offline.text,
                "streaming": comparison.streaming.text,
                "offline_frames": len(comparison.offline.log_probs),
                "streaming_frames": len(comparison.streaming.log_probs),
                "max_abs_log_prob_diff": comparison.max_abs_log_prob_diff,
            }
        )
        logging.info(f"streaming {rows[-1]['streaming']!r} | offline {rows[-1]['offline']!r} | ref {entry.text!r}")
    worst = max(row["max_abs_log_prob_diff"] for row in rows)
    same = sum(row["offline"] == row["streaming"] for row in rows)
    logging.info(
        f"cache-aware streaming (att_context_size {model.encoder.att_context_size}): {same}/{len(rows)} transcripts "
        f"identical to offline, max |log-prob difference| {worst:.2e} over the frames both emit"
    )
    return rows


@hydra_runner(config_path=str(CONF_DIR), config_name="fastconformer_ctc_streaming_finetune")
def main(cfg: DictConfig) -> None:
    pl.seed_everything(cfg.get("seed", 0))
    fold_nemo_config_dumps(cfg.get("verbose", False))
    trainer = pl.Trainer(**cfg.trainer, callbacks=progress_callbacks(cfg.trainer))
    exp_dir = Path(exp_manager(trainer, cfg.get("exp_manager")))
    try:  # a folder reused (exp_manager.resume_if_exists / version) must hold a run of this same config
        definition = {"pretrained_nemo": str(pretrained_path(cfg).resolve()),
                      "model": nemo_model_definition(OmegaConf.to_container(cfg.model, resolve=True))}
        check_rerun(exp_dir, definition, new_run="give it its own name (name=...) or leave exp_manager.version unset")
        record_run(exp_dir, definition)
    except RerunError as exc:
        print(f"rerun error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if cfg.get("tokenizer_build") is not None and cfg.tokenizer_build.dir is None:
        cfg.tokenizer_build.dir = str(exp_dir / "tokenizer")
    model = build_finetune_model(cfg, trainer)
    logging.info(f"fine-tuning config:\n{OmegaConf.to_yaml(cfg)}")

    before = validation_metrics(trainer, model)
    trainer.fit(model)
    after = validation_metrics(trainer, model)

    nemo_path = exp_dir / f"{cfg.name}.nemo"
    model.save_to(str(nemo_path))
    summary = {"nemo": str(nemo_path), "validation_before": before, "validation_after": after}
    if cfg.streaming_check.enabled:
        summary["streaming"] = streaming_report(model, cfg)
    (exp_dir / "finetune_summary.json").write_text(json.dumps(summary, indent=2))
    logging.info(f"validation before {before}, after {after}")
    logging.info(f"wrote {nemo_path} and {exp_dir / 'finetune_summary.json'}")


if __name__ == "__main__":
    main()
