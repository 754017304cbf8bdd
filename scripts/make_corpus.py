#!/usr/bin/env python3
"""Make a local speech corpus with espeak-ng (several voices, rates, pitches) plus noise files.

    python scripts/make_corpus.py --out demo_data/corpus --num-utterances 200 --seed 0

Writes speech/*.wav (+ .txt transcripts), noise/*.wav and the manifests train.json, val.json, noise.json.
"""

import argparse

from nemo_streaming_ssl.data.corpus import make_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num-utterances", type=int, default=200)
    parser.add_argument("--num-noise", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    args = parser.parse_args()
    manifests = make_corpus(args.out, args.num_utterances, args.num_noise, args.seed, args.sample_rate, args.val_fraction)
    for name, path in manifests.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
