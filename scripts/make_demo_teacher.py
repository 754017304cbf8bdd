#!/usr/bin/env python3
"""Write a tiny WavLM Large-style teacher with random weights, to try the distillation recipe without downloads.

    python scripts/make_demo_teacher.py --out demo_data/demo_teacher.pt

The file has the layout of Microsoft's WavLM-Large.pt ({"cfg", "model"}, made by s3prl's WavLM class) with
3 layers of dim 32. The recipe runs end to end on it (distil with teacher.layers=[1,2,3]), but what a student
learns from random weights is useless: for real students use WavLM-Large.pt (STREAMING_WAVLM.md).
"""

import argparse

from s3prl_upstream.distillation.demo_teacher import write_s3prl_wavlm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the .pt file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"wrote {write_s3prl_wavlm(args.out, seed=args.seed)} (random weights: for trying the recipe only)")


if __name__ == "__main__":
    main()
