#!/usr/bin/env python3
"""Does streaming NEST pretraining learn something useful? Frozen features + a linear keyword probe.

    python scripts/ssl_benefit.py --out-dir runs/benefit --preset tiny --steps 300 --seeds 0 1 2

Pretrains each arm (streaming = our causal NEST, random = untrained, same_index = causal NEST scored at frame
k, offline = NeMo's bidirectional NEST) on an espeak-ng corpus, then trains the same logistic-regression
probe on each layer's time-mean+std features to recognise 12 keywords spoken by unseen voices. Writes
results.json, table.txt and probe_accuracy.png to --out-dir and prints the table. Given models skip
pretraining: --nemo streaming=a.nemo --nemo streaming=b.nemo (one run each). See STREAMING_NEST.md,
"Does streaming pretraining learn?".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if (REPO_ROOT / "nemo_streaming_ssl").is_dir() and str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from nemo_streaming_ssl.bench import command_line  # noqa: E402
from nemo_streaming_ssl.evaluation.benefit import ARMS, BenefitSettings, run_benchmark  # noqa: E402
from nemo_streaming_ssl.evaluation.probe import ProbeSettings  # noqa: E402


def parse_nemo(values: list[str]) -> dict[str, list[str]]:
    given: dict[str, list[str]] = {}
    for value in values:
        arm, sep, path = value.partition("=")
        if not sep or arm not in ARMS:
            raise SystemExit(f"--nemo {value}: expected ARM=PATH with ARM one of {list(ARMS)}")
        if not Path(path).is_file():
            raise SystemExit(f"--nemo {value}: {path} is not a file")
        given.setdefault(arm, []).append(path)
    return given


def parse_settings(argv: list[str] | None = None) -> BenefitSettings:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", required=True, help="folder for results.json, table.txt, probe_accuracy.png, models/")
    parser.add_argument("--data-dir", default=None, help="where the corpus and keyword clips are made/reused (default OUT_DIR/data)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--mode", default="causal", help="streaming mode of the streaming arms (conf/mode)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="pretraining seeds (one run each)")
    parser.add_argument("--steps", type=int, default=200, help="pretraining steps per run")
    parser.add_argument("--batch", type=int, default=8, help="pretraining batch size")
    parser.add_argument("--corpus-utterances", type=int, default=200)
    parser.add_argument("--clips-per-speaker", type=int, default=1, help="keyword clips per keyword and speaker")
    parser.add_argument("--probe-epochs", type=int, default=ProbeSettings.epochs)
    parser.add_argument("--probe-lr", type=float, default=ProbeSettings.lr)
    parser.add_argument("--probe-weight-decay", type=float, default=ProbeSettings.weight_decay)
    parser.add_argument("--nemo", action="append", default=[], metavar="ARM=PATH", help="use this .nemo for ARM (repeat)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--override", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
        help="Hydra overrides for every arm, e.g. --override model.optim.lr=2.0 model.masking.block_size=16",
    )
    args = parser.parse_args(argv)
    return BenefitSettings(
        out_dir=args.out_dir,
        data_dir=args.data_dir or str(Path(args.out_dir) / "data"),
        arms=tuple(args.arms),
        preset=args.preset,
        mode=args.mode,
        overrides=tuple(args.override),
        seeds=tuple(args.seeds),
        max_steps=args.steps,
        batch_size=args.batch,
        corpus_utterances=args.corpus_utterances,
        keyword_clips_per_speaker=args.clips_per_speaker,
        probe=ProbeSettings(args.probe_epochs, args.probe_lr, args.probe_weight_decay),
        nemo_files=parse_nemo(args.nemo),
        progress=not args.no_progress,
    )


def main() -> None:
    settings = parse_settings()
    results = run_benchmark(settings, command_line(__file__, sys.argv[1:]))
    print(results["results"]["table"])
    print(f"wall time: {results['wall_s']:.0f} s; results in {Path(settings.out_dir).resolve()}")


if __name__ == "__main__":
    main()
