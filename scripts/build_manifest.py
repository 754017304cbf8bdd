#!/usr/bin/env python3
"""Build NeMo JSON manifests from a folder of WAV/FLAC files, checking every file.

    python scripts/build_manifest.py /data/wavs --out-dir /data/manifests --val-fraction 0.05
    python scripts/build_manifest.py --check /data/train.json          # validate an existing manifest

Transcripts come from sidecar <stem>.txt files when present. Any unreadable, empty, non-mono or
wrongly sampled file stops the build with its path and the fix.
"""

import argparse
import sys

from nemo_streaming_ssl.data.manifest import ManifestError, build_manifests, validate_manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio_dir", nargs="?", help="folder searched recursively for .wav/.flac")
    parser.add_argument("--out-dir", help="where train.json / val.json are written")
    parser.add_argument("--check", metavar="MANIFEST", help="validate this manifest instead of building one")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        if args.check:
            print(validate_manifest(args.check, args.sample_rate).summary())
            return 0
        if not (args.audio_dir and args.out_dir):
            parser.error("give AUDIO_DIR and --out-dir, or --check MANIFEST")
        for name, path in build_manifests(args.audio_dir, args.out_dir, args.sample_rate, args.val_fraction, args.seed).items():
            print(validate_manifest(path, args.sample_rate).summary().replace(str(path), f"{name}: {path}"))
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
