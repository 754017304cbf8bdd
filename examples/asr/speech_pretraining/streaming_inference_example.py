"""Stream an audio file through a pretrained streaming NEST model, chunk by chunk, and report.

    python examples/asr/speech_pretraining/streaming_inference_example.py \\
        model_path=/exp/ssl.nemo audio_filepath=/data/utt.wav [chunk_ms=400] [piece_ms=37] \\
        [posteriors=true] [att_context_size=[-1,4]] [output_path=out.pt] [device=cuda]

Audio is fed in pieces of ``piece_ms`` (default: one chunk), as a microphone would deliver it. Per
emitted chunk it prints the encoder frames (and the most likely NEST token of each frame with
``posteriors=true``) and the compute time; at the end the algorithmic latency of this model and chunk,
compute per chunk, the real-time factor and the max difference from the offline forward of the whole
file. Options are ``key=value`` overrides of ``StreamingExampleConfig`` below.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import soundfile as sf
import torch
from omegaconf import MISSING

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from nemo_streaming_ssl.cli import (  # noqa: E402
    AUDIO,
    PRETRAINED_NEMO,
    exit_on_missing_paths,
    parse_overrides,
    run_script,
)

if __name__ == "__main__":  # before the NeMo import below
    exit_on_missing_paths(sys.argv[1:], {"model_path": PRETRAINED_NEMO, "audio_filepath": AUDIO})

from nemo_streaming_ssl.streaming import AudioInputError, StreamingEncoderRunner  # noqa: E402


@dataclass
class StreamingExampleConfig:
    model_path: str = MISSING  # a .nemo of a streaming NEST model (StreamingNESTModel or stock NEST class)
    audio_filepath: str = MISSING  # mono audio at the model's sample rate (WAV/FLAC/...)
    chunk_ms: Optional[float] = None  # encoder chunk; default one attention chunk ((lookahead + 1) x 80 ms)
    piece_ms: Optional[float] = None  # audio arrives in pieces of this size; default chunk_ms
    att_context_size: Optional[list[int]] = None  # one of the encoder's trained [left, right] pairs
    max_left_context_frames: Optional[int] = None  # cache cap for unlimited left context (default pos_emb_max_len)
    posteriors: bool = False  # also NEST token log-probabilities per frame
    device: str = "cpu"
    # torch CPU threads. 1: a streaming step's few-row products gain little from a second thread, and on a busy
    # machine OpenMP threads spin against other work: 10 s in 80 ms chunks took 16.5 s with 2 threads vs 2.3 s
    # with 1 on a loaded 2-core box. Raise it for large chunks on an idle many-core machine.
    threads: int = 1
    output_path: Optional[str] = None  # torch.save({"frames", "log_probs", "first_token", "report"})
    print_chunks: bool = True


def load_mono(path: str) -> tuple[torch.Tensor, int]:
    if not Path(path).is_file():
        raise SystemExit(f"audio_filepath={path}: no such file")
    audio, rate = sf.read(path, dtype="float32")
    return torch.from_numpy(audio), rate


def main(cfg: StreamingExampleConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    runner = StreamingEncoderRunner.from_nemo(
        cfg.model_path,
        chunk_ms=cfg.chunk_ms,
        att_context_size=cfg.att_context_size,
        max_left_context_frames=cfg.max_left_context_frames,
        posteriors=cfg.posteriors,
        device=cfg.device,
    )
    audio, rate = load_mono(cfg.audio_filepath)
    try:
        state = runner.new_state(1, sample_rate=rate)
        runner.offline(audio)  # validates the whole file (channels, finite samples) before streaming
    except AudioInputError as error:
        raise SystemExit(f"audio_filepath={cfg.audio_filepath}: {error}") from None
    latency = runner.latency
    piece = round((cfg.piece_ms or latency.chunk_ms) * rate / 1000)
    frame_ms = latency.frame_ms

    print(f"model {cfg.model_path}: {type(runner.model).__name__}, d_model {runner.spec.d_model}, "
          f"{runner.num_layers} layers, att_context_size {list(runner.encoder.att_context_size)}"
          f" ({runner.spec.att_context_style})")
    print(f"audio {cfg.audio_filepath}: {audio.numel() / rate:.2f} s, fed in pieces of {piece / rate * 1000:g} ms")
    print(latency.describe())

    frames, log_probs, chunk_ms = [], [], []
    first_token = None
    compute = 0.0  # since the last chunk left: feature work on pieces that completed no chunk counts too
    for start in range(0, audio.numel() + 1, piece):
        end = min(start + piece, audio.numel())
        last = end >= audio.numel()
        began = time.perf_counter()
        out = runner.feed(state, audio[start:end], last=last)[0]
        compute += time.perf_counter() - began
        if not len(out.frames):
            continue
        chunk_ms.append(1000 * compute)
        frames.append(out.frames)
        if cfg.posteriors:
            log_probs.append(out.log_probs)
            first_token = out.first_token if first_token is None else first_token
        if cfg.print_chunks:
            t0, t1 = out.first_frame, out.first_frame + len(out.frames) - 1
            line = (
                f"chunk {len(chunk_ms) - 1:4d}: frames {t0:4d}-{t1:<4d} (audio up to {(t1) * frame_ms / 1000:7.2f} s) "
                f"out after {end / rate:7.3f} s of audio, compute {1000 * compute:7.2f} ms, "
                f"|frame| {out.frames.norm(dim=1).mean():.2f}"
            )
            if cfg.posteriors:  # most likely token per frame; frame i predicts token first_token + i
                tokens = out.log_probs.argmax(dim=1)
                tokens = tokens.squeeze(-1) if tokens.dim() > 1 and tokens.shape[-1] == 1 else tokens
                line += f", tokens k={out.first_token}..: {tokens.tolist()}"
            print(line)
        compute = 0.0
        if last:
            break

    streamed = torch.cat(frames)
    offline = runner.offline(audio)
    report = {
        "algorithmic_latency_ms": latency.algorithmic_latency_ms,
        "chunk_ms": latency.chunk_ms,
        "chunks": len(chunk_ms),
        "compute_per_chunk_ms_median": statistics.median(chunk_ms),
        "compute_per_chunk_ms_max": max(chunk_ms),
        "real_time_factor": sum(chunk_ms) / 1000 / (audio.numel() / rate),
        "max_abs_diff_frames": float((streamed - offline.frames).abs().max()),
    }
    if cfg.posteriors:
        report["max_abs_diff_log_probs"] = float((torch.cat(log_probs) - offline.log_probs).abs().max())
    print("\nreport")
    print(f"  algorithmic latency      {report['algorithmic_latency_ms']:g} ms (chunk {latency.chunk_ms:g} ms + "
          f"half window {latency.window_overhang_ms:g} ms; first frames after {latency.first_output_ms:g} ms of audio)")
    print(f"  compute per chunk        median {report['compute_per_chunk_ms_median']:.2f} ms, "
          f"max {report['compute_per_chunk_ms_max']:.2f} ms over {report['chunks']} chunks")
    print(f"  real-time factor         {report['real_time_factor']:.4f} (compute / audio duration)")
    print(f"  max |stream - offline|   {report['max_abs_diff_frames']:.2e} (encoder frames {tuple(streamed.shape)})"
          + (f", {report['max_abs_diff_log_probs']:.2e} (log-probs)" if cfg.posteriors else ""))
    if cfg.output_path:
        torch.save(
            {"frames": streamed.cpu(), "log_probs": torch.cat(log_probs).cpu() if cfg.posteriors else None,
             "first_token": first_token, "report": report},
            cfg.output_path,
        )
        print(f"  wrote {cfg.output_path}")
    return report


def parse(argv: list[str]) -> StreamingExampleConfig:
    return parse_overrides(StreamingExampleConfig, argv, __doc__)


if __name__ == "__main__":
    run_script(main, parse, sys.argv[1:])
