#!/usr/bin/env python3
"""Make a NeMo tarred audio dataset from NeMo manifests, or check one as a run of N processes would read it.

    python scripts/make_tarred_dataset.py /data/train.json --out-dir /data/train_tarred --num-shards 8 --seed 0
    python scripts/make_tarred_dataset.py /data/train.json --out-dir /data/train_shar --num-shards 8 --shar
    python scripts/make_tarred_dataset.py --check /data/train_tarred/tarred_audio_manifest.json \\
        --archives '/data/train_tarred/audio_{0..7}.tar' --world-size 4 --batch-size 8

Writes NeMo's layout: audio_0.tar ... audio_{N-1}.tar (the audio files under their base names) and
tarred_audio_manifest.json (each line with its shard_id), the input of ``model.train_ds.is_tarred=true``
(docs/data_at_scale.md). Every audio file is checked first; every archive gets the same number of utterances
(DDP processes must see equal counts), the remainder is left out and reported. --num-shards should be a
multiple of the number of training processes (GPUs x nodes). With --shar it writes Lhotse Shar instead
(cuts.*.jsonl.gz + recording.*.tar, FLAC), read with ``++model.train_ds.use_lhotse=true ++model.train_ds.shar_path=DIR``.
"""

import argparse
import sys

from nemo_streaming_ssl.data.manifest import ManifestError
from nemo_streaming_ssl.data.tarred import check_tarred_dataset, make_lhotse_shar, make_tarred_dataset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifests", nargs="*", help="NeMo manifest(s) whose audio goes into the archives")
    parser.add_argument("--out-dir", help="folder of the archives and tarred_audio_manifest.json")
    parser.add_argument("--num-shards", type=int, help="number of archives")
    parser.add_argument("--seed", type=int, help="shuffle the utterances across archives (default: manifest order)")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--shar", action="store_true", help="write Lhotse Shar (for use_lhotse) instead of NeMo's layout")
    parser.add_argument("--check", metavar="MANIFEST", help="check this tarred manifest (with --archives) instead")
    parser.add_argument("--archives", help="with --check: the archives, as in tarred_audio_filepaths")
    parser.add_argument("--world-size", type=int, default=1, help="with --check: training processes")
    parser.add_argument("--batch-size", type=int, default=1, help="with --check: batch size per process")
    args = parser.parse_args()
    try:
        if args.check:
            if not args.archives:
                parser.error("--check needs --archives")
            report = check_tarred_dataset(
                args.check, args.archives, args.sample_rate, world_size=args.world_size, batch_size=args.batch_size,
                drop_last=True,
            )
            print(report.summary())
            return 0
        if not (args.manifests and args.out_dir and args.num_shards):
            parser.error("give MANIFEST(s), --out-dir and --num-shards, or --check MANIFEST --archives PATTERN")
        if args.shar:
            if args.seed is not None:
                parser.error("--seed orders NeMo's archives; Lhotse shuffles Shar shards itself (shard_seed)")
            for field, paths in make_lhotse_shar(args.manifests, args.out_dir, args.num_shards, args.sample_rate).items():
                print(f"{field}: {len(paths)} shards, {paths[0]} ...")
            return 0
        print(make_tarred_dataset(args.manifests, args.out_dir, args.num_shards, args.sample_rate, args.seed).summary())
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
