"""Each streaming mode trains through the real Lightning trainer on generated speech, with decreasing loss."""

import math
import random
import statistics

import lightning.pytorch as pl
import pytest
import torch

from nemo_streaming_ssl.models import StreamingNESTModel

from .nest_support import compose_config

STEPS = 40
WINDOW = 8


class LossRecorder(pl.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


@pytest.mark.parametrize(
    "mode, alignment",
    [("causal", "earliest_complete"), ("lookahead", "earliest_complete"), ("left_context", "earliest_complete"), ("causal", "same_index")],
)
def test_mode_trains_with_decreasing_loss(speech_corpus, mode, alignment):
    torch.manual_seed(0)
    random.seed(0)
    cfg = compose_config(
        f"mode={mode}", f"model.target_alignment={alignment}", "model.optim.sched.warmup_steps=20", corpus=speech_corpus
    )
    recorder = LossRecorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[recorder],
    )
    model = StreamingNESTModel(cfg.model, trainer=trainer)
    trainer.fit(model)
    losses = recorder.losses
    assert len(losses) == STEPS and all(math.isfinite(v) for v in losses)
    first, last = statistics.mean(losses[:WINDOW]), statistics.mean(losses[-WINDOW:])
    assert last < first - 0.3, f"{mode}: loss {first:.3f} -> {last:.3f}"
    assert math.isfinite(float(trainer.callback_metrics["val_loss"]))
