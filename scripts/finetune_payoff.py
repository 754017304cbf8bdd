#!/usr/bin/env python3
"""Does streaming NEST pretraining pay off in CTC fine-tuning? Pretrained vs random init, everything else equal.

    python scripts/finetune_payoff.py --out-dir runs/payoff --data-dir runs/data \
        --nemo runs/L/models/streaming_seed0.nemo --nemo runs/L/models/streaming_seed1.nemo --seeds 0 1 \
        --override model.masking.block_size=16 model.train_ds.batch_augmentor.prob=0.0

Each --nemo (a pretraining seed) is paired with the same architecture untrained (built as ssl_benefit's random
arm, with --preset/--mode/--override as the pretraining had them; refused if its config differs). Both are
fine-tuned with the same vocabulary, steps, batch, lr schedule and seed on a fresh espeak-ng corpus split by
voice, validated every --val-every steps. Writes results.json, table.txt and finetune_curves.png to --out-dir and
prints the table. See STREAMING_NEST.md, "Does streaming pretraining learn?", "Fine-tuning payoff".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if (REPO_ROOT / "nemo_streaming_ssl").is_dir() and str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from nemo_streaming_ssl.bench import command_line  # noqa: E402
from nemo_streaming_ssl.evaluation.payoff import PayoffSettings, run_payoff  # noqa: E402

DEFAULTS = PayoffSettings(out_dir="", data_dir="", nemo_files=(), seeds=())


def parse_settings(argv: list[str] | None = None) -> PayoffSettings:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", required=True, help="folder for results.json, table.txt, finetune_curves.png, models/, tokenizer/")
    parser.add_argument("--data-dir", default=None, help="where the labeled corpus is made/reused (default OUT_DIR/data)")
    parser.add_argument("--nemo", action="append", required=True, metavar="PATH", help="a pretrained streaming NEST .nemo (repeat, one per seed)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="one per --nemo (default 0 1 ...): random-init and fine-tuning seed of each pair")
    parser.add_argument("--preset", default=DEFAULTS.preset, help="of the pretraining (for the random arm)")
    parser.add_argument("--mode", default=DEFAULTS.mode, help="of the pretraining (for the random arm)")
    parser.add_argument("--override", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="Hydra overrides of the pretraining (for the random arm)")
    parser.add_argument("--steps", type=int, default=DEFAULTS.max_steps, help="fine-tuning steps per run")
    parser.add_argument("--batch", type=int, default=DEFAULTS.batch_size, help="fine-tuning batch size")
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr, help="peak lr (AdamW, cosine to --min-lr)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="default: a tenth of --steps")
    parser.add_argument("--min-lr", type=float, default=DEFAULTS.min_lr)
    parser.add_argument("--val-every", type=int, default=DEFAULTS.val_every, help="validate every N steps (and at 0 and the end)")
    parser.add_argument("--vocab-size", type=int, default=DEFAULTS.vocab_size, help="upper bound of the subword vocabulary")
    parser.add_argument("--labeled-utterances", type=int, default=DEFAULTS.labeled_utterances)
    parser.add_argument("--labeled-seed", type=int, default=DEFAULTS.labeled_seed, help="seed of the labeled corpus (pretraining corpus: 0)")
    parser.add_argument("--val-voices", nargs="+", default=list(DEFAULTS.val_voices), help="espeak-ng voices held out for validation")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    for path in args.nemo:
        if not Path(path).is_file():
            raise SystemExit(f"--nemo {path}: not a file")
    seeds = args.seeds if args.seeds is not None else list(range(len(args.nemo)))
    if len(seeds) != len(args.nemo):
        raise SystemExit(f"--seeds: one per --nemo ({len(args.nemo)}), got {seeds}")
    return PayoffSettings(
        out_dir=args.out_dir,
        data_dir=args.data_dir or str(Path(args.out_dir) / "data"),
        nemo_files=tuple(str(Path(p).resolve()) for p in args.nemo),
        seeds=tuple(seeds),
        preset=args.preset,
        mode=args.mode,
        overrides=tuple(args.override),
        max_steps=args.steps,
        batch_size=args.batch,
        lr=args.lr,
        warmup_steps=args.warmup_steps if args.warmup_steps is not None else args.steps // 10,
        min_lr=args.min_lr,
        val_every=args.val_every,
        vocab_size=args.vocab_size,
        labeled_utterances=args.labeled_utterances,
        labeled_seed=args.labeled_seed,
        val_voices=tuple(args.val_voices),
        progress=not args.no_progress,
    )


def main() -> None:
    settings = parse_settings()
    result = run_payoff(settings, command_line(__file__, sys.argv[1:]))
    print(result["results"]["table"])
    print(f"wall time: {result['wall_s']:.0f} s; results in {Path(settings.out_dir).resolve()}")


if __name__ == "__main__":
    main()
