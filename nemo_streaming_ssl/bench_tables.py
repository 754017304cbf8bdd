"""The docs' benchmark tables, rendered from the results JSON the benchmark scripts write (``bench.py``).

A doc holds each table between markers naming the table and its JSON files::

    <!-- bench upstream_chunks docs/bench/upstream_chunks/results.json -->
    (generated: the table, then where its numbers come from)
    <!-- /bench -->

``update_doc`` re-renders every marked block (``scripts/render_bench_tables.py --update DOC``); the tests
check that each doc equals its re-rendering, so a doc table is never typed by hand. Two more kinds of block:
the experiments' tables (``scripts/ssl_benefit.py``, ``scripts/finetune_payoff.py``), re-formatted from the
summary in their results JSON, between ``<!-- result ssl_benefit|payoff FILE -->`` and ``<!-- /result -->``;
and the latency of every hub entry, computed from the models themselves (:func:`latency_table`), between
``<!-- latency -->`` and ``<!-- /latency -->``. Those two import the project's models (torch, NeMo) when used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .bench import REPO_ROOT

BLOCK = re.compile(r"<!-- bench (?P<table>\w+) (?P<paths>[^>]*?) -->\n.*?<!-- /bench -->", re.S)
LATENCY_BLOCK = re.compile(r"<!-- latency -->\n.*?<!-- /latency -->", re.S)
RESULT_BLOCK = re.compile(r"<!-- result (?P<table>\w+) (?P<path>[^ >]+) -->\n.*?<!-- /result -->", re.S)


def ms(value: float) -> str:
    """A duration given in ms, to the precision a noisy shared machine supports."""
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def seconds(value: float) -> str:
    return ms(1000 * value)


def ratio(value: float, goal: float | None = None) -> str:
    """'1.23x', bold when it meets the goal."""
    text = f"{value:.2f}x"
    return f"**{text}**" if goal is not None and value <= goal else text


def row(*cells: Any) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def header(*names: str) -> list[str]:
    return [row(*names), "|" + "---|" * len(names)]


def upstream_chunks(runs: list[dict]) -> list[str]:
    """Streaming WavLM per chunk size: waiting, compute per chunk, true latency, ratio to one-shot, RTF, error."""
    lines = header("chunk", "waiting (worst)", "compute per chunk, mean (p95)", "true worst-case latency",
                   "streaming / one-shot", "real-time factor", "relative difference")
    for run in runs:
        for c in run["results"]["chunks"]:
            chunk = "10 s (offline)" if c["label"] == "offline" else c["label"]
            compute = f"{ms(c['compute_ms_per_chunk_mean'])} ({ms(c['compute_ms_per_chunk_p95'])})"
            lines.append(row(chunk, ms(c["worst_latency_ms_without_compute"]), compute, ms(c["worst_latency_ms"]),
                             ratio(c["ratio_vs_one_shot"]), f"{c['rtf']:.2f}",
                             f"{c['relative_error_vs_one_shot']:.0e}"))
    return lines


def one_shot_note(run: dict) -> str:
    one_shot = run["results"]["one_shot"]
    runs = one_shot["runs_s"]
    return (f"One-shot causal forward of the same audio: {min(runs):.2f}-{max(runs):.2f} s (fastest of each chunk "
            f"size's rounds), real-time factor {one_shot['rtf']:.2f}.")


def upstream_long(runs: list[dict]) -> list[str]:
    """Streaming WavLM long stream: compute per chunk and process memory early vs late, KV cache size."""
    lines = header("stream", "chunk", "compute per chunk, median early / late (fastest)", "process RSS early / end",
                   "KV cache (most frames)")
    for run in runs:
        long = run["results"]["long_stream"]
        compute = (f"{ms(long['early_ms_per_chunk'])} / {ms(long['late_ms_per_chunk'])} "
                   f"({ms(long['early_ms_per_chunk_min'])} / {ms(long['late_ms_per_chunk_min'])})")
        lines.append(row(f"{long['seconds']:g} s", f"{long['chunk_ms']} ms", compute,
                         f"{long['rss_mib_early']:.0f} / {long['rss_mib_end']:.0f} MiB", long["kv_cache_frames_max"]))
    return lines


def upstream_batch(runs: list[dict]) -> list[str]:
    """The s3prl upstream's stream_batch on padded batches against the one-shot forward, one row per run."""
    lines = header("model", "batch", "chunk", "streaming / one-shot", "streaming", "one-shot forward")
    for run in runs:
        s = run["settings"]
        lengths = f"{s['seconds']:g}" if s["min_seconds"] is None else f"{s['min_seconds']:g}-{s['seconds']:g}"
        for c in run["results"]["chunks"]:
            lines.append(row(f"{s['num_layers']} x {s['dim']}", f"{s['batch']} x {lengths} s", c["label"],
                             ratio(c["ratio_vs_one_shot"]), seconds(c["total_s"]), seconds(c["one_shot_s"])))
    return lines


def streaming_chunks(runs: list[dict]) -> list[str]:
    """Streaming NEST per mode and chunk size: latency, compute against one offline forward, RTF, exactness."""
    streams = runs[0]["settings"]["streams"]
    batched = [f"x{streams} / offline"] if streams > 1 else []
    lines = header("mode", "chunk", "latency", "stream / offline", *batched, "real-time factor",
                   "compute per chunk", "max abs difference")
    for run in runs:
        goal = run["results"]["goal_stream_over_offline"]
        for mode in run["results"]["modes"]:
            for c in mode["chunks"]:
                per_stream = [ratio(c["batched_stream_over_offline"], goal)] if batched else []
                lines.append(row(f"{mode['mode']} {mode['att_context_size']}", f"{c['chunk_ms']:g} ms",
                                 f"{c['algorithmic_latency_ms']:g} ms", ratio(c["stream_over_offline"], goal),
                                 *per_stream, f"{c['real_time_factor']:.2f}", ms(c["median_chunk_ms"]),
                                 f"{c['max_abs_diff']:.0e}"))
    return lines


def streaming_chunks_note(run: dict) -> str:
    results, streams = run["results"], run["settings"]["streams"]
    offline = ", ".join(f"{m['mode']} {m['offline_seconds']:.2f} s" for m in results["modes"])
    labels = {"stream": "one stream", "batched": f"x{streams}"}
    smallest = "; ".join(
        f"{m['mode']}: " + ", ".join(f"{labels[kind]} {'none' if v is None else f'{v:g} ms'}"
                                     for kind, v in m["smallest_chunk_meeting_goal_ms"].items())
        for m in results["modes"])
    return (f"Fastest offline forward of {run['settings']['seconds']:g} s of audio: {offline}. Bold: within the "
            f"goal ({results['goal_stream_over_offline']:g}x); smallest such chunk, {smallest}.")


def streaming_long(runs: list[dict]) -> list[str]:
    """Streaming NEST long stream at the smallest chunk: median compute per chunk early vs late."""
    lines = header("mode", "stream", "chunk", "early", "late (last 10 %)", "late / early")
    for run in runs:
        for mode in run["results"]["modes"]:
            long = mode.get("long_stream")
            if long:
                lines.append(row(f"{mode['mode']} {mode['att_context_size']}", f"{long['seconds']:g} s",
                                 f"{long['chunk_ms']:g} ms",
                                 f"{ms(long['early_median_ms'])} (from {long['early_window_s'][0]:.0f} s)",
                                 ms(long["late_median_ms"]), f"{long['late_over_early']:.2f}"))
    return lines


def training(runs: list[dict]) -> list[str]:
    """Training step of streaming NEST against stock NEST per mode."""
    lines = header("mode", "streaming step, median (fastest)", "stock NEST step, median (fastest)",
                   "streaming / stock (medians)")
    for run in runs:
        goal = run["results"]["goal_streaming_over_stock"]
        for mode in run["results"]["modes"]:
            median, fastest = mode["median_step_s"], mode["fastest_step_s"]
            lines.append(row(mode["mode"], f"{seconds(median['streaming'])} ({seconds(fastest['streaming'])})",
                             f"{seconds(median['stock'])} ({seconds(fastest['stock'])})",
                             ratio(mode["streaming_over_stock"], goal)))
    return lines


def training_note(run: dict) -> str:
    s = run["settings"]
    return (f"Preset {s['preset']}, batch {s['batch']} x up to {s['seconds']:g} s, {s['repeats']} timed steps per "
            f"model after {s['warmup']} untimed. Bold: within the goal "
            f"({run['results']['goal_streaming_over_stock']:g}x).")


# table name -> (benchmark whose JSON it reads, rows, optional note from one run)
TABLES: dict[str, tuple[str, Callable[[list[dict]], list[str]], Callable[[dict], str] | None]] = {
    "upstream_chunks": ("bench_upstream", upstream_chunks, one_shot_note),
    "upstream_long": ("bench_upstream", upstream_long, None),
    "upstream_batch": ("bench_upstream", upstream_batch, None),
    "streaming_chunks": ("bench_streaming", streaming_chunks, streaming_chunks_note),
    "streaming_long": ("bench_streaming", streaming_long, None),
    "training": ("bench_training", training, training_note),
}


def shown_path(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)


def machine_text(run: dict) -> str:
    m = run["machine"]
    threads = f"{m['threads']} torch thread{'s' if m['threads'] != 1 else ''}"
    return (f"{run['date'][:10]}, {m['cpu']}, {m['cores']} cores, {threads}, {m['device']}, torch {m['torch']}, "
            f"Python {m['python']}")


def sources(paths: list[Path], runs: list[dict]) -> str:
    """Where the numbers come from: per file its command, run time and the load before it; date and machine."""
    machines = {machine_text(run) for run in runs}
    common = machines.pop() if len(machines) == 1 else None
    lines = [f"Generated by `scripts/render_bench_tables.py` from runs on {common or 'these machines'}:"]
    for path, run in zip(paths, runs):
        own = "" if common else f"; {machine_text(run)}"
        lines.append(f"- `{shown_path(path)}`: `{run['command']}` (ran {run['wall_s']:.0f} s, load average "
                     f"{run['machine']['load_average'][0]:g} at the start{own})")
    return "\n".join(lines)


def render(table: str, paths: list[str | Path]) -> str:
    """One table from its JSON files, with its notes and the runs that made it."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
    benchmark, rows, note = TABLES[table]
    runs = [json.loads((REPO_ROOT / path).read_text()) for path in paths]
    for path, run in zip(paths, runs):
        if run.get("benchmark") != benchmark:
            raise ValueError(f"{path}: table {table} reads {benchmark} results, not {run.get('benchmark')}")
    lines = rows(runs)
    if len(lines) == 2:
        raise ValueError(f"{', '.join(map(str, paths))}: no rows for table {table}")
    notes = "".join(note(run) + "\n\n" for run in runs) if note else ""
    return "\n".join(lines) + "\n\n" + notes + sources(paths, runs)


def tables_of(run: dict) -> list[str]:
    """The tables one results JSON renders."""
    results = run["results"]
    if run["benchmark"] == "bench_upstream":
        if run["settings"]["upstream"]:
            return ["upstream_batch"]
        return ["upstream_chunks"] + (["upstream_long"] if results["long_stream"] else [])
    if run["benchmark"] == "bench_streaming":
        has_long = any("long_stream" in mode for mode in results["modes"])
        return ["streaming_chunks"] + (["streaming_long"] if has_long else [])
    return [name for name, (benchmark, _, _) in TABLES.items() if benchmark == run["benchmark"]]


def update_doc(text: str) -> str:
    """The doc with every marked block re-rendered from its JSON files (or, the latency block, from the code)."""
    def block(match: re.Match) -> str:
        head = match.group(0).split("\n", 1)[0]
        return f"{head}\n\n{render(match['table'], match['paths'].split())}\n\n<!-- /bench -->"

    def result(match: re.Match) -> str:
        head = match.group(0).split("\n", 1)[0]
        return f"{head}\n\n{render_result(match['table'], match['path'])}\n\n<!-- /result -->"

    text = RESULT_BLOCK.sub(result, BLOCK.sub(block, text))
    if LATENCY_BLOCK.search(text):
        table = "\n".join(latency_table())
        text = LATENCY_BLOCK.sub(lambda _: f"<!-- latency -->\n\n{table}\n\n<!-- /latency -->", text)
    return text


def render_result(table: str, path: str | Path) -> str:
    """An experiment's table, formatted by the experiment's own code from the summary in its results JSON."""
    from .evaluation import benefit, payoff

    run = json.loads((REPO_ROOT / path).read_text())
    run = run.get("results", run)  # the benchmark envelope (bench.py); results written before it are flat
    formats = {"ssl_benefit": lambda: benefit.format_table(run["summary"], run["task"]["chance"]),
               "payoff": lambda: payoff.format_table(run["summary"])}
    if table not in formats:
        raise ValueError(f"unknown result table {table!r}; tables: {', '.join(formats)}")
    return f"```\n{formats[table]()}\n```\n\nGenerated by `scripts/render_bench_tables.py` from `{shown_path(REPO_ROOT / path)}`."


def latency_table() -> list[str]:
    """Every hub entry's latency (nemo_streaming_ssl.core.latency) as its model and runner define it: tiny NEST
    models of the shipped causal and lookahead modes (latency does not depend on size) and the WavLM's default
    config, each fed in pieces of its entry's chunk."""
    from s3prl_upstream.hubconf import NEST_CHUNKS_MS, WAVLM_ENTRIES, nest_chunk_argument
    from s3prl_upstream.wavlm import StreamingWavLMConfig

    from .streaming import StreamingEncoderRunner
    from .streaming.untrained import untrained_model

    lines = header("entry", "model", "chunk", "latency, audio sample by sample", "latency, audio in chunk pieces")
    for mode in ("causal", "lookahead"):
        model = untrained_model(["preset=tiny", f"mode={mode}"])
        context = list(model.encoder.att_context_size)
        for entry, chunk_ms in NEST_CHUNKS_MS.items():
            try:
                runner = StreamingEncoderRunner(model, **nest_chunk_argument(chunk_ms))
            except ValueError:  # a chunk this attention context cannot stream: the entry refuses it
                continue
            timing = runner.timing
            lines.append(row(entry, f"NEST `{mode}` {context}", ms(runner.latency.chunk_ms),
                             f"{timing.worst_wait_ms():g} ms",
                             f"{timing.worst_wait_ms(timing.chunk_frames * timing.frame_samples):g} ms"))
    timing = StreamingWavLMConfig().frame_timing
    for entry, factory in WAVLM_ENTRIES.items():
        piece = round(factory.default_chunk_ms * timing.sample_rate / 1000)
        lines.append(row(entry, "WavLM, blocks of 4 frames", ms(factory.default_chunk_ms),
                         f"{timing.worst_wait_ms():g} ms", f"{timing.worst_wait_ms(piece):.1f} ms"))
    return lines


def marked_tables(text: str) -> list[tuple[str, list[str]]]:
    """(table, JSON paths) of every marked block of a doc."""
    return [(m["table"], m["paths"].split()) for m in BLOCK.finditer(text)]
