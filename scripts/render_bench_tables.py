#!/usr/bin/env python3
"""Print the markdown tables of benchmark results (results.json of scripts/bench_*.py), or re-render a doc's.

    python scripts/render_bench_tables.py bench_out/bench_upstream/results.json    # every table it has
    python scripts/render_bench_tables.py --table upstream_batch docs/bench/upstream_batch_*/results.json
    python scripts/render_bench_tables.py --update STREAMING_WAVLM.md STREAMING_NEST.md docs/streaming_core.md

Under each table: where its numbers come from (file, command, date, machine). --update rewrites the blocks
between ``<!-- bench TABLE FILE... -->`` and ``<!-- /bench -->`` markers of each doc from their JSON files
(paths relative to the checkout), the only way the docs' benchmark tables change; it also re-computes the
block between ``<!-- latency -->`` and ``<!-- /latency -->`` (every hub entry's latency) from the models.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Run as a file from a checkout (the nemo_toolkit wheel ships its own top-level `scripts` package).
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from nemo_streaming_ssl.bench_tables import TABLES, render, tables_of, update_doc  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="*", type=Path, help="results.json files of one benchmark")
    parser.add_argument("--table", choices=list(TABLES), help="one table from all the files (default: each file's own)")
    parser.add_argument("--update", nargs="+", type=Path, default=[], metavar="DOC",
                        help="re-render DOC's marked tables")
    args = parser.parse_args(argv)
    if not args.results and not args.update:
        parser.error("give results.json files or --update DOC")
    paths = [path.resolve() for path in args.results]
    if args.table:
        print(render(args.table, paths))
    else:
        for path in paths:
            for table in tables_of(json.loads(path.read_text())):
                print(f"{table}:\n\n{render(table, [path])}\n")
    for doc in args.update:
        text = doc.read_text()
        new = update_doc(text)
        doc.write_text(new)
        print(f"{doc}: {'updated' if new != text else 'unchanged'}")


if __name__ == "__main__":
    main()
