"""The benchmark scripts: one option convention, each smallest setting writes a well-formed results envelope
that renders the docs' tables, and every benchmark table in the docs is the rendering of its committed JSON.

Timings are not asserted: a shared machine makes them anything.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from nemo_streaming_ssl.bench_tables import RESULT_BLOCK, marked_tables, render, tables_of, update_doc

from .script_loader import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("bench_streaming", "bench_upstream", "bench_training")
ENVELOPE = ["benchmark", "command", "date", "machine", "settings", "results", "wall_s"]
MACHINE = {"cpu", "cores", "torch", "threads", "python", "platform", "device", "load_average"}
# The tables each doc shows, all generated.
DOC_TABLES = {
    "STREAMING_WAVLM.md": {"upstream_chunks", "upstream_long", "upstream_batch"},
    "STREAMING_NEST.md": {"streaming_chunks", "streaming_long", "training"},
}


def script(name: str):
    return load_script(REPO / "scripts" / f"{name}.py")


@pytest.mark.parametrize("name", SCRIPTS)
def test_common_options_mean_the_same_everywhere(name):
    args = script(name).parse_args(["--repeats", "3", "--seed", "7"])
    assert args.threads == 1  # torch's default 2 threads spin on a loaded 2-core machine
    assert (args.repeats, args.seed, args.out_dir) == (3, 7, Path("bench_out") / name)
    if name != "bench_training":
        assert script(name).parse_args(["--chunk-ms", "80", "400"]).chunk_ms == [80, 400]


def run_smallest(name: str, argv: list[str], out_dir: Path) -> dict:
    argv = [*argv, "--out-dir", str(out_dir)]
    script(name).main(argv)
    results = json.loads((out_dir / "results.json").read_text())
    assert list(results) == ENVELOPE
    assert results["benchmark"] == name
    assert shlex.split(results["command"]) == ["python", f"scripts/{name}.py", *argv]
    assert set(results["machine"]) == MACHINE and results["machine"]["threads"] == 1
    assert results["settings"]["out_dir"] == str(out_dir) and results["wall_s"] >= 0
    for table in tables_of(results):
        rendered = render(table, [out_dir / "results.json"])
        assert results["command"] in rendered and rendered.startswith("| ")
    return results


def test_bench_streaming_smallest_setting(tmp_path):
    argv = ["--preset", "tiny", "--modes", "causal", "--seconds", "1", "--long-seconds", "2", "--chunk-ms", "80", "160",
            "--streams", "2", "--repeats", "1"]
    results = run_smallest("bench_streaming", argv, tmp_path)
    (mode,) = results["results"]["modes"]
    assert [c["chunk_ms"] for c in mode["chunks"]] == [80, 160]
    assert all(c["max_abs_diff"] < 1e-4 and "batched_stream_over_offline" in c for c in mode["chunks"])
    assert set(mode["smallest_chunk_meeting_goal_ms"]) == {"stream", "batched"} and "long_stream" in mode
    assert tables_of(results) == ["streaming_chunks", "streaming_long"]
    assert (tmp_path / "streaming_latency.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("extra", [["--long-seconds", "1"], ["--upstream", "--batch", "3", "--min-seconds", "0.5"]])
def test_bench_upstream_smallest_setting(tmp_path, extra):
    argv = ["--num-layers", "1", "--dim", "64", "--seconds", "1", "--chunk-ms", "80", "400", "--repeats", "1", *extra]
    results = run_smallest("bench_upstream", argv, tmp_path)
    chunks = results["results"]["chunks"]
    assert [c["chunk_ms"] for c in chunks] == [80, 400]
    assert all(c["relative_error_vs_one_shot"] < 1e-4 for c in chunks)
    if "--upstream" in extra:
        assert tables_of(results) == ["upstream_batch"] and results["results"]["long_stream"] is None
    else:
        assert tables_of(results) == ["upstream_chunks", "upstream_long"]
        assert results["results"]["long_stream"]["num_chunks"] == 10  # at least 10 chunks: early and late tenths


def test_bench_training_smallest_setting(tmp_path):
    argv = ["--preset", "tiny", "--modes", "causal", "left_context", "--batch", "1", "--seconds", "1",
            "--warmup", "0", "--repeats", "1"]
    results = run_smallest("bench_training", argv, tmp_path)
    assert [m["mode"] for m in results["results"]["modes"]] == ["causal", "left_context"]
    for mode in results["results"]["modes"]:
        assert {name: len(times) for name, times in mode["step_seconds"].items()} == {"streaming": 1, "stock": 1}
    assert results["machine"]["device"].startswith(("cpu", "cuda"))


@pytest.mark.parametrize("doc", DOC_TABLES)
def test_doc_tables_are_rendered_from_their_committed_json(doc):
    """Each marked table equals its rendering from the committed JSON: fix a table by rerunning the benchmark
    and `python scripts/render_bench_tables.py --update DOC`, never by hand."""
    text = (REPO / doc).read_text()
    blocks = marked_tables(text)
    assert {table for table, _ in blocks} == DOC_TABLES[doc]
    for _, paths in blocks:
        assert all((REPO / path).is_file() and path.startswith("docs/bench/") for path in paths), paths
    assert update_doc(text) == text, f"{doc}: run python scripts/render_bench_tables.py --update {doc}"


def test_a_table_typed_over_is_caught():
    """One digit changed in a table's first row: the re-rendering differs (and restores it)."""
    text = (REPO / "STREAMING_NEST.md").read_text()
    table, paths = marked_tables(text)[0]
    first_row = render(table, paths).splitlines()[2]
    typed_row = re.sub(r"\d", lambda digit: str((int(digit[0]) + 1) % 10), first_row, count=1)
    typed = text.replace(first_row, typed_row)
    assert typed != text and update_doc(typed) == text


def test_latency_table_is_computed_from_the_models():
    """docs/streaming_core.md's latency of every hub entry is the shared definition applied to the models
    themselves (re-rendered here); a number typed over is caught."""
    text = (REPO / "docs" / "streaming_core.md").read_text()
    assert "<!-- latency -->" in text
    assert update_doc(text) == text, "run python scripts/render_bench_tables.py --update docs/streaming_core.md"
    typed = text.replace("| 412.5 ms |", "| 400 ms |", 1)
    assert typed != text and update_doc(typed) == text


def test_experiment_tables_are_formatted_from_their_results_json():
    """STREAMING_NEST.md's SSL-benefit and payoff tables are the experiments' own format_table of the summary in
    their committed JSON (docs/ssl_benefit/); a digit typed over is caught."""
    text = (REPO / "STREAMING_NEST.md").read_text()
    blocks = RESULT_BLOCK.findall(text)
    assert [table for table, _ in blocks] == ["ssl_benefit"] * 7 + ["payoff"] * 2
    assert all((REPO / path).is_file() and path.startswith("docs/ssl_benefit/") for _, path in blocks)
    assert update_doc(text) == text, "run python scripts/render_bench_tables.py --update STREAMING_NEST.md"
    typed = text.replace("0.696 ±0.025", "0.796 ±0.025", 1)
    assert typed != text and update_doc(typed) == text
