"""Benchmark streaming NEST inference against the offline forward, side by side in one run.

For each mode (causal, lookahead, left_context) on a randomly initialised model of realistic size
(compute does not depend on training):

1. the same audio (default 60 s) through the offline forward (preprocessor + encoder) and streamed
   in real-time pieces of one chunk, for several chunk sizes: total streaming compute / offline
   compute (goal <= 1.5), compute per chunk, real-time factor, algorithmic latency, and the
   max |streamed - offline| as a check; with ``--streams N`` also N concurrent streams in batched
   steps (compute per stream / one offline forward). Per chunk size, ``--repeats`` rounds time each
   kind of run next to the others; the fastest streaming runs count, against the fastest offline
   forward of all the mode's rounds;
2. a long stream (default 5 min): median compute per chunk early (after the left context has filled)
   vs late (the last 10 %) (goal late/early <= 1.2 with limited left context).

Prints a table and the ratios, writes ``<out-dir>/results.json`` (nemo_streaming_ssl.bench) and a PNG plot of
latency and compute per chunk against chunk size, and of compute per chunk along the long stream.

    python scripts/bench_streaming.py                       # preset small (d_model 176, 16 layers)
    python scripts/bench_streaming.py --preset medium --threads 2 --chunk-ms 80 400 2000
    python scripts/bench_streaming.py --override model.encoder.n_layers=8 --seconds 30 --long-seconds 120
    python scripts/render_bench_tables.py bench_out/bench_streaming/results.json   # the docs' tables
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nemo_streaming_ssl.bench import BenchRun, add_common_options, alternating_rounds, timed_stream  # noqa: E402
from nemo_streaming_ssl.core.exactness import difference  # noqa: E402
from nemo_streaming_ssl.streaming import StreamingEncoderRunner  # noqa: E402
from nemo_streaming_ssl.streaming.untrained import untrained_model  # noqa: E402

SAMPLE_RATE = 16000
GOAL_RATIO = 1.5  # total streaming compute / one offline forward


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small", help="conf/preset/<name>.yaml (tiny|small|medium|large|xlarge)")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides, e.g. model.encoder.n_layers=8")
    parser.add_argument("--modes", nargs="+", default=["causal", "lookahead", "left_context"])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio for streaming vs offline")
    parser.add_argument("--long-seconds", type=float, default=300.0, help="long stream for early vs late chunk time (0: none)")
    parser.add_argument(
        "--streams", type=int, default=8, help="also stream this many at once (batched steps): compute per stream"
    )
    parser.add_argument("--device", default="cpu")
    add_common_options(
        parser, "bench_streaming", repeats=2, chunk_ms=[80, 160, 400, 800, 1600, 3200],
        chunk_help="chunk sizes to try; those a mode does not allow (not whole attention chunks) are skipped",
        counts="each round is an offline forward and the streaming runs; the fastest streaming runs count, "
        "against the mode's fastest offline run",
    )
    return parser.parse_args(argv)


def random_audio(seconds: float, seed: int) -> torch.Tensor:
    """Speech-level random audio (compute does not depend on what is said)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy((0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32))


def synchronizer(device: str):
    return torch.cuda.synchronize if device.startswith("cuda") else lambda: None


def time_offline(runner: StreamingEncoderRunner, audio: torch.Tensor, device: str):
    """Seconds of one offline forward, and its frames."""
    synchronize = synchronizer(device)
    synchronize()
    start = time.perf_counter()
    output = runner.offline(audio)
    synchronize()
    return time.perf_counter() - start, output.frames


def time_stream(runner: StreamingEncoderRunner, audio: torch.Tensor, device: str, streams: int = 1):
    """Real time: one chunk of audio per piece, for ``streams`` concurrent streams (batched steps).

    Returns the compute of each piece (s, all streams together; the flush last) and the frames of stream 0.
    """
    piece = round(runner.latency.chunk_ms * SAMPLE_RATE / 1000)
    audio = audio.to(device)
    times, outputs = timed_stream(runner, audio if streams == 1 else audio.expand(streams, -1), piece,
                                  sample_rate=SAMPLE_RATE, synchronize=synchronizer(device))
    return times, outputs[0].frames


def timed_rounds(runner: StreamingEncoderRunner, audio: torch.Tensor, args: argparse.Namespace):
    """``args.repeats`` rounds of an offline forward, one stream and ``args.streams`` batched streams, timed
    next to each other (nemo_streaming_ssl.bench.alternating_rounds).

    Returns the offline runs' seconds and the offline frames, then per-piece times and frames of the
    fastest single-stream run and per-piece times of the fastest batched run (None with ``--streams 1``).
    """
    kinds = {
        "offline": lambda: time_offline(runner, audio, args.device),
        "stream": lambda: time_stream(runner, audio, args.device),
    }
    if args.streams > 1:
        kinds["batched"] = lambda: time_stream(runner, audio, args.device, streams=args.streams)
    runs = alternating_rounds(kinds, args.repeats)
    times, frames = min(runs["stream"], key=lambda run: sum(run[0]))
    batch_times = min((run[0] for run in runs.get("batched", [])), key=sum, default=None)
    return [run[0] for run in runs["offline"]], runs["offline"][0][1], times, frames, batch_times


def bench_mode(mode: str, args: argparse.Namespace) -> dict:
    model = untrained_model([f"preset={args.preset}", f"mode={mode}", *args.override]).to(args.device)
    attention_chunk = model.encoder.att_context_size[1] + 1
    audio = random_audio(args.seconds, args.seed)
    params = sum(p.numel() for p in model.encoder.parameters())
    row = {
        "mode": mode,
        "att_context_size": list(model.encoder.att_context_size),
        "encoder_params": params,
        "audio_seconds": args.seconds,
        "offline_runs_seconds": [],
        "chunks": [],
    }
    warm = StreamingEncoderRunner(model, chunk_frames=attention_chunk)
    time_stream(warm, audio[: 2 * SAMPLE_RATE], args.device)  # first-call overheads out of the way
    warm.offline(audio)
    frame_ms = warm.frame_ms
    for chunk_ms in args.chunk_ms:
        frames_per_chunk = chunk_ms / frame_ms
        if frames_per_chunk != int(frames_per_chunk) or int(frames_per_chunk) % attention_chunk:
            continue
        runner = StreamingEncoderRunner(model, chunk_frames=int(frames_per_chunk))
        offline_runs, offline_frames, times, frames, batch_times = timed_rounds(runner, audio, args)
        row["offline_runs_seconds"] += offline_runs
        row["chunks"].append(
            {
                "chunk_frames": runner.chunk_frames,
                **runner.latency.as_dict(),
                "stream_seconds": sum(times),
                "real_time_factor": sum(times) / args.seconds,
                "median_chunk_ms": 1000 * statistics.median(times[:-1]),
                "max_abs_diff": difference(frames, offline_frames).max_abs,
                **({"batched_stream_seconds": sum(batch_times) / args.streams} if batch_times is not None else {}),
            }
        )
        print(
            f"  {mode:13s} chunk {row['chunks'][-1]['chunk_ms']:6.0f} ms: latency "
            f"{row['chunks'][-1]['algorithmic_latency_ms']:6.1f} ms, streaming {sum(times):6.2f} s "
            f"(offline {min(offline_runs):5.2f} s), {row['chunks'][-1]['median_chunk_ms']:6.2f} ms per chunk",
            flush=True,
        )
    # The offline forward is the same work for every chunk size: its fastest run of all rounds is the
    # reference (a run is only ever slowed down by other load, and two slow runs in a row happen here).
    row["offline_seconds"] = min(row["offline_runs_seconds"])
    for chunk in row["chunks"]:
        chunk["stream_over_offline"] = chunk["stream_seconds"] / row["offline_seconds"]
        if "batched_stream_seconds" in chunk:
            chunk["batched_stream_over_offline"] = chunk["batched_stream_seconds"] / row["offline_seconds"]
    row["smallest_chunk_meeting_goal_ms"] = smallest_chunk_meeting_goal(row, args.streams)
    if args.long_seconds > 0:
        row["long_stream"] = bench_long_stream(model, attention_chunk, args)
    return row


def bench_long_stream(model, attention_chunk: int, args: argparse.Namespace) -> dict:
    runner = StreamingEncoderRunner(model, chunk_frames=attention_chunk)
    audio = random_audio(args.long_seconds, args.seed + 1)
    times, _ = time_stream(runner, audio, args.device)
    times = times[:-1]  # without the flush
    chunk_s = runner.latency.chunk_ms / 1000
    left = runner.spec.left_context_frames
    # "early" starts once the left context has filled (or after 10 % for unlimited left context)
    warm_chunks = (left // runner.chunk_frames + 1) if left >= 0 else len(times) // 10
    tenth = max(1, len(times) // 10)
    early = times[warm_chunks : warm_chunks + tenth]
    late = times[-tenth:]
    result = {
        "seconds": args.long_seconds,
        "chunk_ms": runner.latency.chunk_ms,
        "early_window_s": [warm_chunks * chunk_s, (warm_chunks + tenth) * chunk_s],
        "early_median_ms": 1000 * statistics.median(early),
        "late_median_ms": 1000 * statistics.median(late),
        "chunk_ms_trace": [1000 * t for t in times],
    }
    result["late_over_early"] = result["late_median_ms"] / result["early_median_ms"]
    return result


def smallest_chunk_meeting_goal(row: dict, streams: int) -> dict:
    """Per kind of run ('stream', and 'batched' with several streams), the smallest chunk (ms) whose compute is
    within the goal of the offline forward, or None when none of those tried is."""
    kinds = {"stream": "stream_over_offline"}
    if streams > 1:
        kinds["batched"] = "batched_stream_over_offline"
    smallest = {}
    for kind, key in kinds.items():
        met = [c["chunk_ms"] for c in row["chunks"] if c[key] <= GOAL_RATIO]
        smallest[kind] = min(met) if met else None
    return smallest


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if any("long_stream" in r for r in rows) else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2))
    for row in rows:
        chunk = [c["chunk_ms"] for c in row["chunks"]]
        label = f"{row['mode']} {row['att_context_size']}"
        axes[0].plot(chunk, [c["algorithmic_latency_ms"] for c in row["chunks"]], "o-", label=label)
        axes[1].plot(chunk, [c["median_chunk_ms"] for c in row["chunks"]], "o-", label=label)
        if panels == 3 and "long_stream" in row:
            trace = np.asarray(row["long_stream"]["chunk_ms_trace"])
            step = row["long_stream"]["chunk_ms"] / 1000
            window = max(1, len(trace) // 100)
            smooth = np.convolve(trace, np.ones(window) / window, mode="valid")
            axes[2].plot(np.arange(len(smooth)) * step, smooth, label=label)
    axes[0].set(xlabel="chunk (ms)", ylabel="algorithmic latency (ms)", title="latency = chunk + half window")
    axes[1].set(xlabel="chunk (ms)", ylabel="compute per chunk (ms, median)", title="measured compute per chunk")
    axes[1].set_yscale("log")
    if panels == 3:
        axes[2].set(xlabel="stream time (s)", ylabel="compute per chunk (ms)", title="long stream, smallest chunk")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    run = BenchRun("bench_streaming", __file__, argv, args)
    print(
        f"streaming vs offline, preset={args.preset} {' '.join(args.override)}, {args.seconds:g} s audio, "
        f"{args.threads} thread(s), device {args.device}",
        flush=True,
    )
    rows = [bench_mode(mode, args) for mode in args.modes]

    print(f"\nencoder parameters: {rows[0]['encoder_params'] / 1e6:.1f} M")
    batched = f"  x{args.streams}/offline" if args.streams > 1 else ""
    print(
        "mode          att_context  chunk_ms  latency_ms  offline_s  stream_s  stream/offline"
        f"{batched}  RTF    ms/chunk  max|diff|"
    )
    for row in rows:
        for c in row["chunks"]:
            per_stream = f"  {c['batched_stream_over_offline']:12.2f}" if args.streams > 1 else ""
            print(
                f"{row['mode']:13s} {str(row['att_context_size']):12s} {c['chunk_ms']:8.0f}  {c['algorithmic_latency_ms']:10.1f}"
                f"  {row['offline_seconds']:9.2f}  {c['stream_seconds']:8.2f}  {c['stream_over_offline']:14.2f}"
                f"{per_stream}  {c['real_time_factor']:.3f}  {c['median_chunk_ms']:8.2f}  {c['max_abs_diff']:.1e}"
            )
    if args.streams > 1:
        print(f"x{args.streams}/offline: compute per stream when {args.streams} streams share each step, / one offline forward")
    print(f"\ngoal stream/offline <= {GOAL_RATIO}: smallest chunk that meets it")
    labels = {"stream": "one stream", "batched": f"x{args.streams}"}
    for row in rows:
        met = row["smallest_chunk_meeting_goal_ms"]
        text = "; ".join(f"{labels[k]}: {'none of those tried' if v is None else f'{v} ms'}" for k, v in met.items())
        print(f"{row['mode']:13s} {str(row['att_context_size']):12s} {text}")
    if any("long_stream" in r for r in rows):
        print(f"\nlong stream ({args.long_seconds:g} s), smallest chunk: median compute per chunk early vs late")
        for row in rows:
            if "long_stream" in row:
                ls = row["long_stream"]
                print(
                    f"{row['mode']:13s} {str(row['att_context_size']):12s} early {ls['early_median_ms']:7.2f} ms "
                    f"(from {ls['early_window_s'][0]:.0f} s)  late {ls['late_median_ms']:7.2f} ms  "
                    f"late/early {ls['late_over_early']:.2f}"
                )
    path = run.write({"goal_stream_over_offline": GOAL_RATIO, "modes": rows})
    plot(rows, args.out_dir / "streaming_latency.png")
    print(f"\nwrote {path} and {args.out_dir / 'streaming_latency.png'}")


if __name__ == "__main__":
    main()
