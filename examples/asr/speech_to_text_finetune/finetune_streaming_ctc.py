"""Fine-tune a pretrained streaming NEST encoder into a cache-aware streaming CTC model.

Run it as a file (the nemo_toolkit wheel owns the top-level package name `examples`):

    python examples/asr/speech_to_text_finetune/finetune_streaming_ctc.py \
        pretrained_nemo=nest.nemo \
        model.train_ds.manifest_filepath=train.json model.validation_ds.manifest_filepath=val.json \
        trainer.max_steps=2000

Config: conf/fastconformer_ctc_streaming_finetune.yaml (subword vocabulary built from the training transcripts;
`--config-name fastconformer_ctc_streaming_finetune_char` for characters). Any key can be overridden.
Writes <exp_dir>/<name>/.../<name>.nemo (loads with stock `EncDecCTCModel.restore_from`), and prints the
validation CTC loss and WER before and after training and a streaming check: every trained att_context_size,
the first validation utterances streamed through StreamingCTCTranscriber against NeMo's offline transcribe
(and NeMo's own conformer_stream_step, for comparison).
Each run writes into its own dated folder; a reused folder (exp_manager.resume_if_exists=true or an explicit
exp_manager.version) must hold a run of the same pretrained model and model config, else the run stops
before anything is trained, listing what differs.
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

from nemo_streaming_ssl.cli import MANIFEST, PRETRAINED_NEMO, exit_on_missing_paths  # noqa: E402

if __name__ == "__main__":  # before the NeMo imports below
    exit_on_missing_paths(sys.argv[1:], {"pretrained_nemo": PRETRAINED_NEMO, "manifest_filepath": MANIFEST})

from nemo.core.config import hydra_runner  # noqa: E402
from nemo.utils import logging  # noqa: E402
from nemo.utils.exp_manager import exp_manager  # noqa: E402

from nemo_streaming_ssl.asr.finetune import build_finetune_model, manifest_paths, pretrained_path  # noqa: E402
from nemo_streaming_ssl.asr.streaming import nemo_stream_transcribe, setup_cache_aware_streaming  # noqa: E402
from nemo_streaming_ssl.asr.streaming_ctc import (  # noqa: E402
    StreamingCTCTranscriber,
    attention_context,
    max_abs_log_prob_diff,
)
from nemo_streaming_ssl.config import config_dir  # noqa: E402
from nemo_streaming_ssl.console import fold_nemo_config_dumps, progress_callbacks  # noqa: E402
from nemo_streaming_ssl.data.manifest import read_manifest  # noqa: E402
from nemo_streaming_ssl.run_record import RerunError, check_rerun, nemo_model_definition, record_run  # noqa: E402


def validation_metrics(trainer: pl.Trainer, model) -> dict[str, float]:
    results = trainer.validate(model, verbose=False)
    return {k: float(v) for k, v in results[0].items()} if results else {}


def streaming_report(model, cfg: DictConfig) -> list[dict]:
    """Stream the first validation utterances in every trained att_context_size: ours vs NeMo's offline transcribe.

    One row per utterance and attention context. With ``streaming_check.nemo_conformer_stream_step`` the row
    also holds NeMo's own cache-aware path (not exact with zero lookahead; may drop the last frame).
    """
    check = cfg.streaming_check
    entries = read_manifest(manifest_paths(cfg.model.validation_ds)[0])[: check.max_utterances]
    audios = [torch.from_numpy(sf.read(entry.audio_filepath, dtype="float32")[0]) for entry in entries]
    rows = []
    for att_context_size in [list(pair) for pair in model.encoder.att_context_size_all]:
        transcriber = StreamingCTCTranscriber(model, att_context_size=att_context_size, chunk_ms=check.chunk_ms)
        offline = transcriber.offline(audios)
        context_rows = []
        for entry, audio, reference in zip(entries, audios, offline):
            streamed = transcriber.transcribe(audio, sample_rate=cfg.model.sample_rate)
            row = {
                "att_context_size": att_context_size,
                "audio_filepath": entry.audio_filepath,
                "reference": entry.text,
                "offline": reference.text,
                "streaming": streamed.text,
                "offline_frames": len(reference.log_probs),
                "streaming_frames": len(streamed.log_probs),
                "max_abs_log_prob_diff": max_abs_log_prob_diff(reference.log_probs, streamed.log_probs),
            }
            if check.nemo_conformer_stream_step:
                with attention_context(model.encoder, att_context_size):
                    setup_cache_aware_streaming(model, longest_stream_s=entry.duration)
                    nemo = nemo_stream_transcribe(model, audio)
                row["nemo_conformer_stream_step"] = {
                    "text": nemo.text,
                    "frames": len(nemo.log_probs),
                    "max_abs_log_prob_diff": max_abs_log_prob_diff(reference.log_probs, nemo.log_probs),
                }
            context_rows.append(row)
        rows += context_rows
        same = sum(row["streaming"] == row["offline"] for row in context_rows)
        worst = max(row["max_abs_log_prob_diff"] for row in context_rows)
        logging.info(
            f"streaming, att_context_size {att_context_size}, chunk {transcriber.runner.latency.chunk_ms:g} ms: "
            f"{same}/{len(context_rows)} transcripts equal to offline transcribe, max |log-prob difference| {worst:.2e}"
        )
        if check.nemo_conformer_stream_step:
            nemo_rows = [row["nemo_conformer_stream_step"] for row in context_rows]
            logging.info(
                f"  NeMo's conformer_stream_step (inexact with zero lookahead, may drop the last frame): "
                f"{sum(n['text'] == row['offline'] for n, row in zip(nemo_rows, context_rows))}/{len(context_rows)} "
                f"equal, max |log-prob difference| {max(n['max_abs_log_prob_diff'] for n in nemo_rows):.2e}, "
                f"{sum(n['frames'] != row['offline_frames'] for n, row in zip(nemo_rows, context_rows))} with a "
                "different frame count"
            )
    return rows


@hydra_runner(config_path=str(config_dir()), config_name="fastconformer_ctc_streaming_finetune")
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
