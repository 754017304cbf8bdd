#!/usr/bin/env python3
"""Fidelity of a distilled streaming WavLM: per-layer cosine similarity and MSE to its teacher, per chunk size.

    python scripts/wavlm_fidelity_report.py --student exp/streaming_wavlm_distill/checkpoints/last.ckpt \
        --manifest /data/val.json --out-dir report/

The teacher file and layers default to those recorded in the distillation checkpoint. For every chunk size
of the s3prl hub entries (200, 400, 600, 800, 1000 ms and offline = 10 s chunks) the student is streamed
over each utterance and compared with the offline teacher. Prints a table; writes fidelity.png (similarity
per layer, one line per chunk size) and fidelity.json to --out-dir.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from nemo_streaming_ssl.data.manifest import validate_manifest
from s3prl_upstream.distillation.fidelity import HUB_CHUNK_MS, fidelity_report
from s3prl_upstream.distillation.teacher import load_teacher
from s3prl_upstream.wavlm import load_streaming_wavlm
from s3prl_upstream.wavlm.checkpoint import read_checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", required=True, help="distillation checkpoint (.ckpt) or exported student .pt")
    parser.add_argument("--teacher", help="teacher checkpoint (default: the one recorded in --student)")
    parser.add_argument("--teacher-layers", type=int, nargs="+", help="1-based teacher layers (default: recorded)")
    parser.add_argument("--manifest", required=True, help="held-out NeMo manifest")
    parser.add_argument("--chunk-ms", type=int, nargs="+", default=list(HUB_CHUNK_MS))
    parser.add_argument("--max-utterances", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=30.0, help="use at most this much of each utterance")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--out-dir", type=Path, default=Path("fidelity_report"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ckpt = read_checkpoint(args.student, given_as="--student")
    recorded = ckpt.get("distillation", {})
    teacher_path = args.teacher or recorded.get("teacher_checkpoint")
    layers = args.teacher_layers or recorded.get("teacher_layers")
    if not teacher_path or not layers:
        sys.exit(f"{args.student} records no teacher; pass --teacher and --teacher-layers")
    student = load_streaming_wavlm(ckpt)
    teacher, _ = load_teacher(teacher_path, layers, given_as="--teacher" if args.teacher else f"the teacher recorded in {args.student}")
    if student.config.num_layers != len(teacher.layers) or student.config.dim != teacher.dim:
        sys.exit(
            f"student ({student.config.num_layers} layers x {student.config.dim}) does not match "
            f"{len(teacher.layers)} teacher layers x {teacher.dim}; check --teacher-layers"
        )
    entries = validate_manifest(args.manifest, args.sample_rate).entries[: args.max_utterances]
    report = fidelity_report(
        student, teacher, [e.audio_filepath for e in entries], args.chunk_ms, args.sample_rate, args.max_seconds, args.device
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "fidelity.json").write_text(json.dumps(report.to_dict(), indent=2))
    plot = report.plot(args.out_dir / "fidelity.png")
    print(f"student {args.student} vs teacher {teacher_path} (layers {list(teacher.layers)}), {report.num_utterances} utterances")
    print(report.table())
    print(f"plot: {plot}\nnumbers: {args.out_dir / 'fidelity.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
