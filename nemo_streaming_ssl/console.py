"""What our training scripts print: NeMo's config dumps folded to one line, and one progress bar over the run.

A NeMo run prints each model config several times (the whole Hydra config, then every data config again in
warnings when a ``.nemo`` is restored): about 70 lines per restore. Lightning's bar counts the batches of one
epoch and opens a new bar per epoch and per validation. Our scripts fold the dumps (``verbose=true`` restores
them) and show one bar: global step out of ``max_steps`` with the train loss and the last validation metrics.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

NEMO_LOGGER = "nemo_logger"
MAX_SHOWN_LINES = 6
MAX_SHOWN_CHARS = 600  # exp_manager logs its whole schema as one ~3000-character dict
# Logged metrics the bar shows when present: pretraining logs train_loss/val_loss, CTC also val_wer.
SHOWN_METRICS = {"train_loss": "loss", "val_loss": "val_loss", "val_wer": "val_wer"}


class FoldLongRecords(logging.Filter):
    """Shortens a config dump: a log record of more than MAX_SHOWN_LINES lines to its first line, a single line
    of more than MAX_SHOWN_CHARS characters to its first 100."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        lines = message.splitlines()
        if len(lines) > MAX_SHOWN_LINES:
            record.msg, record.args = f"{lines[0]} [{len(lines) - 1} more lines hidden: verbose=true shows them]", ()
        elif len(message) > MAX_SHOWN_CHARS:
            record.msg = f"{message[:100]} [{len(message) - 100} more characters hidden: verbose=true shows them]"
            record.args = ()
        return True


def fold_nemo_config_dumps(verbose: bool) -> None:
    """Unless ``verbose``, fold NeMo's multi-line log records (config dumps) to one line each."""
    logger = logging.getLogger(NEMO_LOGGER)
    for existing in [f for f in logger.filters if isinstance(f, FoldLongRecords)]:
        logger.removeFilter(existing)
    if not verbose:
        logger.addFilter(FoldLongRecords())


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar counting global steps up to ``max_steps`` (across epochs and resumes), with the latest
    train loss and validation metrics; validation runs get no bar of their own."""

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self.train_progress_bar.reset(trainer.max_steps if trainer.max_steps > 0 else None)
        self.train_progress_bar.n = trainer.global_step  # a resumed run starts where it stopped
        self.train_progress_bar.set_description("step")

    def on_train_epoch_start(self, trainer, *_: Any) -> None:
        pass  # one bar for the whole run, not one per epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if self._should_update(step, self.train_progress_bar.total) or step == trainer.max_steps:
            self.train_progress_bar.n = step
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def init_validation_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def init_sanity_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        logged = trainer.callback_metrics
        return {short: f"{float(logged[key]):.4g}" for key, short in SHOWN_METRICS.items() if key in logged}


def progress_callbacks(trainer_cfg) -> list:
    """The trainer callbacks for our bar (none when the trainer config turns the bar off)."""
    return [StepProgressBar()] if trainer_cfg.get("enable_progress_bar", True) else []
