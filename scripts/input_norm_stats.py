#!/usr/bin/env python3
"""Per-mel-bin mean/std of a training manifest for ``model.input_normalize.type=fixed``, printed as Hydra overrides.

    python scripts/input_norm_stats.py --manifest data/train.json --out stats.txt [--max-utterances 200] [--override ...]

Writes (to --out, else prints) ``+model.preprocessor.fixed_mean=[...] +model.preprocessor.fixed_std=[...]``: the numbers a streaming NEST
model estimates itself when built with that manifest (the same code), for runs that should share one map
(e.g. a pretrained and an untrained model) or data the estimate cannot read (tarred, remote). See STREAMING_NEST.md,
"Fixed input normalization".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if (REPO_ROOT / "nemo_streaming_ssl").is_dir() and str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from nemo_streaming_ssl.config import compose_config  # noqa: E402
from nemo_streaming_ssl.models.input_normalize import DEFAULT_MAX_UTTERANCES, apply_input_normalize  # noqa: E402
from nemo_streaming_ssl.streaming.untrained import STREAMING_CONFIG  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="training manifest(s), comma-separated")
    parser.add_argument("--max-utterances", type=int, default=DEFAULT_MAX_UTTERANCES)
    parser.add_argument("--out", default=None, help="write the overrides to this file (NeMo logs to stdout too)")
    parser.add_argument("--config-name", default=STREAMING_CONFIG)
    parser.add_argument("--override", nargs="+", action="extend", default=[], help="Hydra overrides (preprocessor keys)")
    args = parser.parse_args()
    cfg = compose_config(
        args.config_name,
        [
            *args.override,
            "model.input_normalize.type=fixed",
            f"model.input_normalize.max_utterances={args.max_utterances}",
            f"model.train_ds.manifest_filepath={args.manifest}",
        ],
    ).model
    pre = apply_input_normalize(cfg).preprocessor
    overrides = " ".join(f"+model.preprocessor.{key}=[{','.join(repr(v) for v in pre[key])}]" for key in ("fixed_mean", "fixed_std"))
    if args.out:
        Path(args.out).write_text(overrides + "\n")
    print(overrides)


if __name__ == "__main__":
    main()
