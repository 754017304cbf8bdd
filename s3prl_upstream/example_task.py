"""s3prl's ``example`` downstream, cut down to a smoke run of an upstream through s3prl's own run_downstream.py.

The task needs no dataset: random 5-20 s audio with 48 random labels, so it checks the wiring (upstream,
Featurizer, training, checkpoints, evaluation) and learns nothing. The s3prl pip package ships the task's code
but not its ``config.yaml``, which run_downstream.py reads from ``./downstream/example/``: this writes one.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def example_task_config(total_steps: int = 4, save_step: int | None = None) -> dict:
    """``total_steps`` steps of one utterance, ``states-<step>.ckpt`` every ``save_step`` steps (default: at the
    end), no evaluation while training, and evaluation (``-m evaluate``) on a single utterance."""
    runner = {"total_steps": total_steps, "gradient_clipping": 1, "gradient_accumulate_steps": 1, "log_step": 1,
              "eval_step": total_steps + 1, "save_step": save_step or total_steps, "max_keep": 10,
              "evaluate_ratio": 0.001, "eval_dataloaders": ["dev"]}
    return {"runner": runner, "optimizer": {"name": "AdamW", "lr": 1.0e-3},
            "downstream_expert": {"datarc": {"num_workers": 0, "train_batch_size": 1, "eval_batch_size": 1},
                                  "modelrc": {"input_dim": 16}}}


def write_example_task(folder: str | Path, total_steps: int = 4, save_step: int | None = None) -> Path:
    """Writes ``<folder>/downstream/example/config.yaml``; returns its path. Run s3prl from ``folder``."""
    config = Path(folder) / "downstream" / "example" / "config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(example_task_config(total_steps, save_step), sort_keys=False))
    return config
