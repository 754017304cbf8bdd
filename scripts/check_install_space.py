#!/usr/bin/env python3
"""Stop a fresh install before it starts when the disk cannot hold it, with the numbers and the fix.

    python3 scripts/check_install_space.py --venv .venv

The pinned stack fills about 8.2 GiB in the virtual environment: PyPI's torch 2.8 wheel brings 4.6 GiB
of CUDA libraries even on a CPU machine. pip holds about 3.8 GiB of downloaded wheels in the temporary
folder until it has installed them all, so a fresh `make install` peaked at 12.0 GiB on one filesystem.
Standard library only: it runs before the environment exists.
"""

import argparse
import os
import shutil
import sys
import tempfile

VENV_GIB = 8.5
DOWNLOADS_GIB = 4.0


def nearest_existing(path: str) -> str:
    """The path itself or its closest existing parent (the venv folder does not exist yet)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def shortfalls(needs: list[tuple[str, float, str]]) -> list[str]:
    """One line per filesystem with less free space than ``needs`` ((folder, GiB, what for)) add up to there."""
    by_device: dict[int, list] = {}
    for folder, gib, what in needs:
        folder = nearest_existing(folder)
        entry = by_device.setdefault(os.stat(folder).st_dev, [folder, 0.0, []])
        entry[1] += gib
        entry[2].append(f"{what} {gib:.1f} GiB")
    lines = []
    for folder, need_gib, parts in by_device.values():
        free_gib = shutil.disk_usage(folder).free / 2**30
        if free_gib < need_gib:
            lines.append(f"{folder}: {free_gib:.1f} GiB free, the install needs {need_gib:.1f} GiB there ({' + '.join(parts)})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", default=".venv", help="folder the virtual environment will be made in")
    args = parser.parse_args(argv)
    lines = shortfalls([
        (args.venv, VENV_GIB, "virtual environment"),
        (tempfile.gettempdir(), DOWNLOADS_GIB, "pip's downloads"),
    ])
    if lines:
        print("Not enough disk space to install:\n  " + "\n  ".join(lines), file=sys.stderr)
        print("Free some space, or put the environment on a bigger disk (make install VENV=/big/disk/.venv)"
              " and pip's downloads too (TMPDIR=/big/disk/tmp).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
