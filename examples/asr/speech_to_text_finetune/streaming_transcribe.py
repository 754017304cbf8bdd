"""Transcribe audio with a fine-tuned streaming CTC model, chunk by chunk, exactly as offline.

    python examples/asr/speech_to_text_finetune/streaming_transcribe.py \\
        model_path=/exp/FastConformer-CTC-Streaming-NEST.nemo audio_filepath=/data/utt.wav [chunk_ms=400]
    python examples/asr/speech_to_text_finetune/streaming_transcribe.py \\
        model_path=/exp/ctc.nemo manifest_filepath=/data/test.json [print_chunks=false] [output_path=report.json]

The audio is fed in pieces of ``piece_ms`` (default one chunk), as a microphone would deliver it, through
``StreamingCTCTranscriber`` (exact streaming of the encoder + greedy CTC as frames become final). Per
emitted chunk it prints when it left, its latency and the text it added; at the end the streamed
transcript, NeMo's offline ``model.transcribe`` transcript of the same audio, whether they are equal,
the WER against the manifest's ``text`` (if any) and the real-time factor. Options are ``key=value``
overrides of ``StreamingTranscribeConfig`` below.
"""

from __future__ import annotations

import json
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import soundfile as sf
import torch
from omegaconf import MISSING

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

# NeMo-free: the inputs are checked before the slow NeMo import.
from nemo_streaming_ssl.cli import parse_overrides, run_script  # noqa: E402
from nemo_streaming_ssl.data.manifest import ManifestEntry, ManifestError, probe_audio, read_manifest  # noqa: E402


@dataclass
class StreamingTranscribeConfig:
    model_path: str = MISSING  # a fine-tuned CTC .nemo (finetune_streaming_ctc.py writes one)
    audio_filepath: Optional[str] = None  # one mono file at the model's sample rate ...
    manifest_filepath: Optional[str] = None  # ... or a NeMo manifest (its "text", if any, gives the WER)
    chunk_ms: Optional[float] = None  # encoder chunk; default one attention chunk ((lookahead + 1) x 80 ms)
    piece_ms: Optional[float] = None  # audio arrives in pieces of this size; default chunk_ms
    att_context_size: Optional[list[int]] = None  # one of a multi-latency model's trained [left, right] pairs
    max_left_context_frames: Optional[int] = None  # cache cap for unlimited left context (default 5000)
    max_utterances: Optional[int] = None  # first N of the manifest
    device: str = "cpu"
    threads: int = 1  # torch CPU threads; 1 by default, why: streaming_inference_example.py
    print_chunks: bool = True
    output_path: Optional[str] = None  # JSON: per utterance transcripts and numbers, and the summary


def check_inputs(cfg: StreamingTranscribeConfig) -> list[ManifestEntry]:
    """Files exist and are what they should be (before the NeMo import); the utterances to transcribe."""
    model = Path(cfg.model_path)
    if not model.is_file():
        raise SystemExit(f"model_path={model}: no such file; give the .nemo written by finetune_streaming_ctc.py")
    if not tarfile.is_tarfile(model):
        raise SystemExit(f"model_path={model}: not a .nemo archive; give the .nemo written by model.save_to")
    if (cfg.audio_filepath is None) == (cfg.manifest_filepath is None):
        raise SystemExit("give audio_filepath=<file> or manifest_filepath=<manifest.json> (one of them)")
    if cfg.audio_filepath is not None:
        audio = Path(cfg.audio_filepath)
        if not audio.is_file():
            raise SystemExit(f"audio_filepath={audio}: no such file")
        try:
            duration_s = sf.info(str(audio)).duration
        except Exception as error:  # soundfile raises its own types, all meaning "unreadable"
            raise SystemExit(f"audio_filepath={audio}: unreadable audio ({error}); re-encode it as WAV or FLAC") from None
        return [ManifestEntry(str(audio), duration_s)]
    try:
        entries = read_manifest(cfg.manifest_filepath)[: cfg.max_utterances]
    except ManifestError as error:
        raise SystemExit(f"manifest_filepath: {error}") from None
    for entry in entries:
        if not Path(entry.audio_filepath).is_file():
            raise SystemExit(
                f"manifest_filepath={cfg.manifest_filepath}:{entry.line_no}: {entry.audio_filepath}: no such file "
                "(relative paths are read from the manifest's folder)"
            )
    return entries


def main(cfg: StreamingTranscribeConfig) -> dict:
    entries = check_inputs(cfg)
    torch.set_num_threads(cfg.threads)
    from nemo.collections.asr.metrics.wer import word_error_rate

    from nemo_streaming_ssl.asr.streaming_ctc import StreamingCTCTranscriber, max_abs_log_prob_diff

    transcriber = StreamingCTCTranscriber.from_nemo(
        cfg.model_path,
        chunk_ms=cfg.chunk_ms,
        att_context_size=cfg.att_context_size,
        max_left_context_frames=cfg.max_left_context_frames,
        device=cfg.device,
    )
    rate = transcriber.runner.spec.sample_rate
    where = "audio_filepath" if cfg.audio_filepath else f"manifest_filepath={cfg.manifest_filepath}"
    for entry in entries:  # sample rate and channels, now that the model says what it expects
        try:
            probe_audio(entry.audio_filepath, rate)
        except ManifestError as error:
            line = f":{entry.line_no}" if entry.line_no else ""
            raise SystemExit(f"{where}{line}: {error}") from None
    latency = transcriber.runner.latency
    piece_samples = round((cfg.piece_ms or latency.chunk_ms) * rate / 1000)
    model = transcriber.model
    print(f"model {cfg.model_path}: {type(model).__name__}, {model.decoder.num_classes_with_blank - 1} tokens, "
          f"att_context_size {transcriber.att_context_size}")
    print(latency.describe())
    print(f"audio in pieces of {piece_samples / rate * 1000:g} ms")

    def show(chunk) -> None:
        update = chunk.update
        last = update.first_frame + len(update.log_probs) - 1
        edit = f" (replacing {update.replaced_chars} chars)" if update.replaced_chars else ""
        print(f"  {chunk.audio_s:8.3f} s  frames {update.first_frame:4d}-{last:<4d} latency {1000 * chunk.latency_s:7.1f} ms  "
              f"+{update.new_text!r}{edit}")

    rows, audio_s, compute_s, latencies = [], 0.0, 0.0, []
    for entry in entries:
        audio = torch.from_numpy(sf.read(entry.audio_filepath, dtype="float32")[0])
        print(f"\n{entry.audio_filepath} ({audio.numel() / rate:.2f} s)")
        streamed = transcriber.transcribe(
            audio, sample_rate=rate, piece_samples=piece_samples, on_chunk=show if cfg.print_chunks else None
        )
        (offline,) = transcriber.offline([audio])
        row = {
            "audio_filepath": entry.audio_filepath,
            "streaming": streamed.text,
            "offline": offline.text,
            "equal": streamed.text == offline.text,
            "frames": len(streamed.log_probs),
            "offline_frames": len(offline.log_probs),
            "max_abs_log_prob_diff": max_abs_log_prob_diff(streamed.log_probs, offline.log_probs),
            "real_time_factor": streamed.compute_s / (audio.numel() / rate),
        }
        if entry.text:
            row["reference"] = entry.text
            row["wer"] = word_error_rate([streamed.text], [entry.text])
        rows.append(row)
        audio_s += audio.numel() / rate
        compute_s += streamed.compute_s
        latencies += [chunk.latency_s for chunk in streamed.chunks]
        print(f"  streamed   {streamed.text!r}")
        print(f"  offline    {offline.text!r}  (NeMo's model.transcribe)")
        print(f"  equal      {'yes' if row['equal'] else 'NO'}; max |log-prob diff| {row['max_abs_log_prob_diff']:.2e} "
              f"over {row['frames']} frames" + (f"; WER {100 * row['wer']:.1f}%" if "wer" in row else ""))

    with_text = [row for row in rows if "reference" in row]
    summary = {
        "utterances": len(rows),
        "equal": sum(row["equal"] for row in rows),
        "max_abs_log_prob_diff": max(row["max_abs_log_prob_diff"] for row in rows),
        "algorithmic_latency_ms": latency.algorithmic_latency_ms,
        "max_chunk_latency_ms": 1000 * max(latencies),
        "real_time_factor": compute_s / audio_s,
    }
    if with_text:
        references = [row["reference"] for row in with_text]
        summary["wer_streaming"] = word_error_rate([row["streaming"] for row in with_text], references)
        summary["wer_offline"] = word_error_rate([row["offline"] for row in with_text], references)
    print("\nreport")
    if len(rows) == 1:
        print(f"  transcript               {rows[0]['streaming']!r}")
        print(f"  offline transcript       {rows[0]['offline']!r} (NeMo's model.transcribe)")
    print(f"  equal to offline         {summary['equal']}/{len(rows)} transcripts; max |log-prob diff| "
          f"{summary['max_abs_log_prob_diff']:.2e}")
    if with_text:
        print(f"  WER vs reference         streamed {100 * summary['wer_streaming']:.2f}%, offline "
              f"{100 * summary['wer_offline']:.2f}% ({len(with_text)} utterances with text)")
    print(f"  latency                  algorithmic {latency.algorithmic_latency_ms:g} ms; measured max "
          f"{summary['max_chunk_latency_ms']:.1f} ms (oldest audio of a chunk, arrival to text, compute included)")
    print(f"  real-time factor         {summary['real_time_factor']:.4f} (compute / audio duration, {audio_s:.2f} s)")
    report = {"summary": summary, "utterances": rows}
    if cfg.output_path:
        Path(cfg.output_path).write_text(json.dumps(report, indent=2))
        print(f"  wrote {cfg.output_path}")
    return report


def parse(argv: list[str]) -> StreamingTranscribeConfig:
    return parse_overrides(StreamingTranscribeConfig, argv, __doc__)


if __name__ == "__main__":
    run_script(main, parse, sys.argv[1:])
