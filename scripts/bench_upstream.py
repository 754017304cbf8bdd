#!/usr/bin/env python3
"""Benchmark the streaming WavLM on CPU: streaming cost per chunk size against one one-shot causal forward.

    python scripts/bench_upstream.py                       # full run: 12 x 1024, 30 s audio, 10-minute stream
    python scripts/bench_upstream.py --seconds 10 --long-seconds 30   # quick look
    python scripts/bench_upstream.py --batch 8 --seconds 10 --long-seconds 0  # a batch, as s3prl extracts
    python scripts/bench_upstream.py --upstream --batch 32 --seconds 1 --chunk-ms 400  # s3prl's keyword spotting
    python scripts/render_bench_tables.py bench_out/bench_upstream/results.json   # the docs' tables

Random weights, float32, batch 1 (``--batch N``: N utterances streamed together, as the s3prl upstream
streams a batch). ``--upstream`` times what SUPERB runs at every training step instead: the s3prl
upstream's ``stream_batch`` on a padded batch (rows of ``--min-seconds`` to ``--seconds``, each ending
at its own length) against the one-shot forward with lengths; it reports totals, ratios and errors
only (no per-chunk times, long stream or plot). For each chunk size (default 80/200/400/600/800/1000 ms
and 10 s "offline") it streams the same audio and reports: total time / one-shot time (the ratio), real-time
factor, compute per chunk, the worst-case true latency (nemo_streaming_ssl.core.latency with pieces of
one chunk, plus compute), and the streamed output's difference from the one-shot output. Each streaming run is
timed next to its own one-shot run (``--repeats`` pairs, alternating order, the fastest of each kind
counting), so a drifting machine load skews the ratios less. Then it streams ``--long-seconds`` of audio
in ``--long-chunk-ms`` chunks and compares per-chunk time and process RSS early vs late (both must stay
flat: the state is bounded). Writes ``<out-dir>/results.json`` (nemo_streaming_ssl.bench) and a PNG plot.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from nemo_streaming_ssl.bench import BenchRun, add_common_options, alternating_rounds, timed_stream
from nemo_streaming_ssl.core.exactness import difference
from nemo_streaming_ssl.core.fast_linear import use_fast_cpu_linears
from s3prl_upstream.expert import StreamingWavLMExpert
from s3prl_upstream.wavlm import StreamingWavLM, StreamingWavLMConfig

SAMPLE_RATE = 16000
SAMPLES_PER_MS = SAMPLE_RATE // 1000


def rss_mib() -> float:
    """Resident set size of this process now (Linux /proc), in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def one_shot(model: StreamingWavLM, wav: torch.Tensor, lengths_samples: list[int] | None
             ) -> tuple[float, list[torch.Tensor]]:
    start = time.perf_counter()
    hidden, _ = model(wav, None if lengths_samples is None else torch.tensor(lengths_samples))
    return time.perf_counter() - start, hidden


def stream(model: StreamingWavLM, wav: torch.Tensor, chunk_samples: int) -> tuple[list[float], list[torch.Tensor]]:
    """Per-chunk compute times (the flush counted with the last chunk) and the outputs, per layer [B, T, D]."""
    times, outputs = timed_stream(model, wav, chunk_samples, sample_rate=SAMPLE_RATE)
    times[-2:] = [sum(times[-2:])]
    return times, list(torch.stack([out.hidden_states for out in outputs], dim=1).unbind(0))


def stream_upstream(model: StreamingWavLM, wav: torch.Tensor, lengths_samples: list[int], chunk_samples: int
                    ) -> tuple[list[float], list[torch.Tensor]]:
    """The s3prl upstream's streaming of a padded batch wav [B, S]: ([total time], per layer [B, T, D])."""
    expert = StreamingWavLMExpert(model, chunk_samples)
    begin = time.perf_counter()
    hidden = expert.stream_batch(wav, lengths_samples)
    return [time.perf_counter() - begin], hidden


def long_stream(model: StreamingWavLM, seconds: float, chunk_ms: int, seed: int) -> dict:
    from tqdm import tqdm

    chunk = chunk_ms * SAMPLES_PER_MS
    num_chunks = max(10, round(seconds * 1000 / chunk_ms))
    state = model.new_state(1, sample_rate=SAMPLE_RATE)
    generator = torch.Generator().manual_seed(seed)
    times, rss, cache = [], [], 0
    for _ in tqdm(range(num_chunks), desc=f"long stream ({chunk_ms} ms chunks)", unit="chunk"):
        piece = 0.1 * torch.randn(1, chunk, generator=generator)
        begin = time.perf_counter()
        model.feed(state, piece)
        times.append(time.perf_counter() - begin)
        rss.append(rss_mib())
        cache = max(cache, state.kv_cache_frames)
    tenth = max(1, num_chunks // 10)
    early, late = times[tenth : 2 * tenth], times[-tenth:]  # skip the first tenth: warm-up, cache filling
    return {
        "chunk_ms": chunk_ms, "seconds": num_chunks * chunk_ms / 1000, "num_chunks": num_chunks,
        "early_ms_per_chunk": 1e3 * statistics.median(early), "late_ms_per_chunk": 1e3 * statistics.median(late),
        "early_ms_per_chunk_min": 1e3 * min(early), "late_ms_per_chunk_min": 1e3 * min(late),
        "rss_mib_early": rss[2 * tenth - 1], "rss_mib_end": rss[-1], "kv_cache_frames_max": cache,
        "times_ms": [1e3 * t for t in times], "rss_mib": rss,
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["chunks"]
    labels = [r["label"] for r in rows]
    long = results["long_stream"]
    fig, axes = plt.subplots(1, 3 if long else 2, figsize=(17 if long else 11.5, 4.8))
    ax = axes[0]
    compute = [r["compute_ms_per_chunk_mean"] for r in rows]
    ax.bar(labels, compute, color="tab:blue", label="compute per chunk (mean)")
    ax.plot(labels, [r["chunk_ms"] for r in rows], "k--", marker="o", label="chunk duration (real time)")
    ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.set_title(f"Compute per chunk (ratio to one-shot); one-shot RTF {results['one_shot']['rtf']:.2f}")
    for i, r in enumerate(rows):
        ax.annotate(f"{r['ratio_vs_one_shot']:.2f}x\nRTF {r['rtf']:.2f}", (i, compute[i]), ha="center", va="bottom",
                    fontsize=8, bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0})
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    waiting = [r["worst_latency_ms_without_compute"] for r in rows]
    compute_p95 = [r["compute_ms_per_chunk_p95"] for r in rows]
    ax.bar(labels, waiting, color="tab:gray", label="buffering + block (algorithmic)")
    ax.bar(labels, compute_p95, bottom=waiting, color="tab:orange", label="compute (p95 per chunk)")
    ax.set_yscale("log")
    ax.set_ylim(bottom=30)
    ax.set_ylabel("worst-case latency (ms)")
    ax.set_title("True latency per chunk size")
    ax.legend(fontsize=8, loc="upper left")
    if long:
        ax = axes[2]
        minutes = [i * long["chunk_ms"] / 60_000 for i in range(len(long["times_ms"]))]
        ax.plot(minutes, long["times_ms"], lw=0.5, color="tab:blue")
        ax.set_xlabel("stream time (min)")
        ax.set_ylabel(f"compute per {long['chunk_ms']} ms chunk (ms)", color="tab:blue")
        twin = ax.twinx()
        twin.plot(minutes, long["rss_mib"], color="tab:red")
        twin.set_ylabel("process RSS (MiB)", color="tab:red")
        twin.set_ylim(0, max(long["rss_mib"]) * 1.2)
        ax.set_title(f"Long stream: {long['seconds'] / 60:.1f} min, bounded state")
    fig.suptitle(results["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="audio length for the ratios")
    parser.add_argument("--long-seconds", type=float, default=600.0,
                        help="length of the memory/drift stream (0: none)")
    parser.add_argument("--long-chunk-ms", type=int, default=400)
    parser.add_argument("--num-layers", type=int, default=12)
    parser.add_argument("--dim", type=int, default=1024, help="model width (FFN 4 x dim, dim / 64 heads)")
    parser.add_argument("--batch", type=int, default=1,
                        help="utterances per run, streamed together (ratios and RTF; the long stream stays one)")
    parser.add_argument("--upstream", action="store_true",
                        help="time the s3prl upstream's stream_batch on a padded batch (what SUPERB runs)")
    parser.add_argument("--min-seconds", type=float, default=None,
                        help="with --upstream: utterance lengths spread evenly from this to --seconds")
    add_common_options(parser, "bench_upstream", repeats=2, chunk_ms=[80, 200, 400, 600, 800, 1000, 10000],
                       chunk_help="chunk sizes in ms (10000 = the 'offline' hub entry)",
                       counts="each round is a one-shot forward and a streaming run; the fastest of each counts")
    args = parser.parse_args(argv)
    if args.min_seconds is not None and not args.upstream:
        parser.error("--min-seconds needs --upstream (the streams of one model state advance together)")
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    run = BenchRun("bench_upstream", __file__, argv, args)
    cfg = StreamingWavLMConfig(num_layers=args.num_layers, dim=args.dim, ffn_dim=4 * args.dim,
                               num_heads=args.dim // 64)
    model = StreamingWavLM(cfg).eval()
    use_fast_cpu_linears(model)  # as load_streaming_wavlm and the hub entries give it
    samples = int(args.seconds * SAMPLE_RATE)
    wav = 0.1 * torch.randn(args.batch, samples)
    lengths_samples = None
    if args.upstream:
        shortest = int((args.seconds if args.min_seconds is None else args.min_seconds) * SAMPLE_RATE)
        lengths_samples = torch.linspace(shortest, samples, args.batch).round().long().tolist()
        wav *= torch.arange(samples)[None, :] < torch.tensor(lengths_samples)[:, None]  # zero padding
    # real-time factors are per second of audio
    audio_s = (sum(lengths_samples) if args.upstream else args.batch * samples) / SAMPLE_RATE
    seconds = f"{args.seconds:g}" if args.min_seconds is None else f"{args.min_seconds:g}-{args.seconds:g}"
    title = (f"streaming WavLM {cfg.num_layers} x {cfg.dim}, window {cfg.window_size}, lookahead "
             f"{cfg.lookahead_size}; {args.batch} x {seconds} s audio{', s3prl upstream' if args.upstream else ''}; "
             f"float32 CPU, {torch.get_num_threads()} threads")
    print(title)

    with torch.inference_mode():
        model(wav[:, :SAMPLE_RATE])  # warm-up
        stream(model, wav[:, : 2 * SAMPLE_RATE], 400 * SAMPLES_PER_MS)
        rows = []
        for chunk_ms in args.chunk_ms:
            def run_stream() -> tuple[list[float], list[torch.Tensor]]:
                if args.upstream:
                    return stream_upstream(model, wav, lengths_samples, chunk_ms * SAMPLES_PER_MS)
                return stream(model, wav, chunk_ms * SAMPLES_PER_MS)

            # Each streaming run is timed next to a one-shot run (machine load drifts); the fastest of each counts.
            runs = alternating_rounds({"one_shot": lambda: one_shot(model, wav, lengths_samples),
                                       "stream": run_stream}, args.repeats)
            one_shot_s, reference = min(runs["one_shot"], key=lambda run: run[0])
            times, streamed = min(runs["stream"], key=lambda run: sum(run[0]))
            error = difference(streamed, reference)
            rows.append({
                "chunk_ms": chunk_ms, "label": "offline" if chunk_ms >= 10_000 else f"{chunk_ms} ms",
                "total_s": sum(times), "one_shot_s": one_shot_s,
                "ratio_vs_one_shot": sum(times) / one_shot_s, "rtf": sum(times) / audio_s,
                "relative_error_vs_one_shot": error.relative, "max_abs_error_vs_one_shot": error.max_abs,
            })
            if not args.upstream:
                latency_ms = model.timing.worst_wait_ms(chunk_ms * SAMPLES_PER_MS)
                compute_p95_ms = 1e3 * sorted(times)[int(0.95 * (len(times) - 1))]
                rows[-1].update({
                    "num_chunks": len(times), "compute_ms_per_chunk_mean": 1e3 * statistics.mean(times),
                    "compute_ms_per_chunk_p95": compute_p95_ms, "worst_latency_ms_without_compute": latency_ms,
                    "worst_latency_ms": latency_ms + compute_p95_ms,
                })
            print(f"  {rows[-1]['label']:>8}: streaming {sum(times):7.2f} s, one-shot {one_shot_s:6.2f} s", flush=True)
        long = None
        if not args.upstream and args.long_seconds > 0:
            long = long_stream(model, args.long_seconds, args.long_chunk_ms, args.seed + 1)

    one_shot_runs = [r["one_shot_s"] for r in rows]
    one_shot_s = statistics.median(one_shot_runs)
    results = {"title": title, "one_shot": {"seconds": one_shot_s, "runs_s": one_shot_runs,
                                            "rtf": one_shot_s / audio_s},
               "chunks": rows, "long_stream": long}
    print(f"\none-shot causal forward: median {one_shot_s:.2f} s (RTF {one_shot_s / audio_s:.3f}); runs "
          + " ".join(f"{t:.1f}" for t in one_shot_runs))
    print(f"{'chunk':>8} {'stream s':>9} {'1-shot s':>9} {'ratio':>6} {'RTF':>6} {'ms/chunk':>9} {'p95':>7} "
          f"{'latency ms':>11} {'rel err':>8} {'max abs':>8}")
    for r in rows:
        per_chunk = (f"{'-':>9} {'-':>7} {'-':>11}" if args.upstream else
                     f"{r['compute_ms_per_chunk_mean']:9.1f} {r['compute_ms_per_chunk_p95']:7.1f} {r['worst_latency_ms']:11.0f}")
        print(f"{r['label']:>8} {r['total_s']:9.2f} {r['one_shot_s']:9.2f} {r['ratio_vs_one_shot']:6.2f} {r['rtf']:6.3f} "
              f"{per_chunk} {r['relative_error_vs_one_shot']:8.1e} {r['max_abs_error_vs_one_shot']:8.1e}")

    path = run.write(results)
    if args.upstream:
        print(f"wrote {path}")
        return
    if long:
        print(f"long stream: {long['seconds'] / 60:.1f} min in {long['chunk_ms']} ms chunks: per chunk median (min) "
              f"{long['early_ms_per_chunk']:.0f} ({long['early_ms_per_chunk_min']:.0f}) ms early vs "
              f"{long['late_ms_per_chunk']:.0f} ({long['late_ms_per_chunk_min']:.0f}) ms late; "
              f"RSS {long['rss_mib_early']:.0f} MiB early vs {long['rss_mib_end']:.0f} MiB at the end; "
              f"KV cache at most {long['kv_cache_frames_max']} frames")
    plot(results, args.out_dir / "bench_upstream.png")
    print(f"wrote {path} and {args.out_dir / 'bench_upstream.png'}")


if __name__ == "__main__":
    main()
