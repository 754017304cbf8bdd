"""Distil a streaming WavLM from a WavLM teacher (recipe: conf/streaming_wavlm_distill.yaml, STREAMING_WAVLM.md "Distillation").

    python examples/wavlm_distillation/distill_streaming_wavlm.py --config-name=streaming_wavlm_distill \
        teacher.checkpoint=/ckpt/WavLM-Large.pt data.train_manifest=/data/train.json \
        data.val_manifest=/data/val.json trainer.devices=8

Writes ``<exp_dir>/checkpoints/{last.ckpt, best-step*.ckpt}`` (resumable) and student-only copies
``student_{last,best}.pt``; each loads in the streaming WavLM s3prl upstreams with ``-k <file>`` and no ``-g``.
Rerun with ``resume_from=auto`` to continue a stopped run.
"""

import hydra
from omegaconf import DictConfig

from nemo_streaming_ssl.config import config_dir
from s3prl_upstream.distillation.recipe import run_distillation


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="streaming_wavlm_distill")
def main(cfg: DictConfig) -> None:
    result = run_distillation(cfg)
    if result.is_global_zero:
        print(f"step {result.global_step}: last checkpoint {result.last_checkpoint}, best {result.best_checkpoint}")
        for kind, path in result.students.items():
            print(f"student ({kind}, for -k): {path}")


if __name__ == "__main__":
    main()
