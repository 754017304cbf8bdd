"""What every benchmark script shares: its common options, its timing harness (alternating rounds, a timed
stream of either model) and the results JSON it writes.

Options, with the same name, form and meaning in every script under ``scripts/bench_*.py``:

* ``--chunk-ms 80 400 ...`` chunk sizes, whole milliseconds, a list;
* ``--repeats N`` timed rounds: each round times every kind of run compared next to the others, the
  order alternating from round to round, so a drifting machine load hits each kind alike;
* ``--threads N`` torch CPU threads, the same for every run compared (default 1 in every script, see
  ``THREADS_HELP``);
* ``--seed N`` seed of the random weights and audio;
* ``--out-dir DIR`` where ``results.json`` (and plots) go;
* durations of audio in seconds (``--seconds``, ``--long-seconds``), of chunks in milliseconds.

``results.json`` is one envelope: ``{"benchmark", "command", "date", "machine", "settings", "results",
"wall_s"}``; ``nemo_streaming_ssl.bench_tables`` renders the docs' tables from it.

Plain Python: torch is imported only when a run starts, so the docs' tables render without it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import time
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_NAME = "results.json"
THREADS_HELP = (
    "torch CPU threads, the same for every run compared (default 1: on a loaded 2-core machine torch's "
    "default of 2 threads made streaming 15-190x slower than 1 thread, their OpenMP workers spinning against "
    "other work; raise it on an idle machine with more cores)"
)


def add_common_options(
    parser: argparse.ArgumentParser,
    benchmark: str,
    *,
    repeats: int,
    counts: str,
    chunk_ms: list[int] | None = None,
    chunk_help: str = "chunk sizes to try, whole milliseconds",
) -> None:
    """Add --chunk-ms (when the benchmark has chunk sizes), --repeats, --threads, --seed and --out-dir.

    counts: what of the repeated runs counts, for --repeats' help (e.g. "the fastest run of each kind counts").
    """
    if chunk_ms is not None:
        parser.add_argument("--chunk-ms", nargs="+", type=int, default=chunk_ms, help=chunk_help)
    parser.add_argument(
        "--repeats", type=int, default=repeats,
        help="timed rounds, each timing every kind of run next to the others, in alternating order; " + counts,
    )
    parser.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and audio")
    parser.add_argument(
        "--out-dir", type=Path, default=Path("bench_out") / benchmark, help=f"where {RESULTS_NAME} and plots go"
    )


def command_line(script: str | Path, argv: list[str]) -> str:
    """The shell line that reruns this benchmark: the script's path relative to the checkout when inside it."""
    path = Path(script).resolve()
    shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    return shlex.join(["python", str(shown), *argv])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str = "cpu") -> dict[str, Any]:
    """What a timing depends on: CPU, cores, torch and its threads, Python, OS, device, and the load at the call."""
    import torch

    if device.startswith("cuda"):
        device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "load_average": [round(load, 2) for load in os.getloadavg()],  # 1, 5, 15 min: others' work on the machine
    }


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def envelope(benchmark: str, command: str, date: str, machine: dict, settings: Any, results: Any, wall_s: float
             ) -> dict[str, Any]:
    """The results JSON of every benchmark, in this key order."""
    return {"benchmark": benchmark, "command": command, "date": date, "machine": machine,
            "settings": plain(settings), "results": results, "wall_s": round(wall_s, 1)}


def plain(value: Any) -> Any:
    """Settings as JSON: paths as strings, tuples as lists."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return str(value) if isinstance(value, Path) else value


class BenchRun:
    """One run of a benchmark script: sets torch's threads and seed at the start, writes the envelope at the end."""

    def __init__(self, benchmark: str, script: str | Path, argv: list[str], args: argparse.Namespace):
        import torch

        torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        self.benchmark, self.args = benchmark, args
        self.command = command_line(script, argv)
        self.date = now()
        self.machine = machine(getattr(args, "device", "cpu"))  # the load before the run's own work
        self.started = time.perf_counter()

    def write(self, results: Any, device: str | None = None) -> Path:
        """Write ``<out_dir>/results.json`` and return its path; ``device`` when the script chose it itself."""
        if device is not None:
            self.machine["device"] = machine(device)["device"]
        wall_s = time.perf_counter() - self.started
        return write_results(self.args.out_dir, envelope(
            self.benchmark, self.command, self.date, self.machine, vars(self.args), results, wall_s))


def alternating_rounds(kinds: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[Any]]:
    """``repeats`` rounds that run every kind once, the order reversed every other round, so a drifting machine
    load hits each kind alike; the caller counts the fastest run of each kind."""
    runs: dict[str, list[Any]] = {kind: [] for kind in kinds}
    for repeat in range(repeats):
        for kind in list(kinds)[:: 1 if repeat % 2 == 0 else -1]:
            runs[kind].append(kinds[kind]())
    return runs


def timed_stream(model, audio, piece_samples: int, *, sample_rate: int, synchronize: Callable[[], None] = lambda: None
                 ) -> tuple[list[float], list]:
    """Stream ``audio`` (S,) or (B, S) (B streams) through a fresh state of a streaming model
    (nemo_streaming_ssl.core.protocol) in pieces. Returns the seconds of every call (the flush last) and, per
    stream, everything it emitted."""
    from .core.protocol import feed_in_pieces, join

    state = model.new_state(1 if audio.dim() == 1 else audio.shape[0], sample_rate=sample_rate)
    calls, times = iter(feed_in_pieces(model, state, audio, piece_samples)), []
    outputs = []
    while True:
        synchronize()
        start = time.perf_counter()
        try:
            outputs.append(next(calls))
        except StopIteration:
            break
        synchronize()
        times.append(time.perf_counter() - start)
    return times, join(outputs)


def write_results(out_dir: str | Path, results: dict) -> Path:
    """Write an envelope as ``<out_dir>/results.json``; returns the path."""
    path = Path(out_dir) / RESULTS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path
