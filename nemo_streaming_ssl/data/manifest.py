"""NeMo-style JSON-lines manifests: build them from audio folders and validate them before training.

A manifest line is ``{"audio_filepath": str, "duration": float, "text": str}``. Relative audio paths
are resolved against the manifest's folder, as NeMo does. Validation reads every file's header with
soundfile and fails before training, naming the manifest line, the file and the fix.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import soundfile as sf

AUDIO_SUFFIXES = (".wav", ".flac")
# Manifest duration and real duration may differ by rounding; more than this means a stale manifest.
DURATION_TOLERANCE_S = 0.05


class ManifestError(ValueError):
    """A manifest, or an audio file it names, cannot be used. The message says where and how to fix it."""


@dataclass(frozen=True)
class ManifestEntry:
    audio_filepath: str
    duration: float
    text: str = ""
    line_no: int = 0

    def to_json(self) -> str:
        return json.dumps({"audio_filepath": self.audio_filepath, "duration": self.duration, "text": self.text})


@dataclass
class ManifestReport:
    """What validation found: usable entries and those NeMo would drop for their duration (counted, never silent)."""

    path: Path
    entries: list[ManifestEntry] = field(default_factory=list)
    out_of_range: list[ManifestEntry] = field(default_factory=list)

    @property
    def hours(self) -> float:
        return sum(e.duration for e in self.entries) / 3600.0

    def summary(self) -> str:
        text = f"{self.path}: {len(self.entries)} utterances, {self.hours:.3f} h"
        if self.out_of_range:
            lost_s = sum(e.duration for e in self.out_of_range)
            text += f"; {len(self.out_of_range)} more ({lost_s:.1f} s) outside the duration limits are skipped"
        return text


def probe_audio(path: str | Path, sample_rate: int) -> float:
    """Return the duration in seconds of a mono audio file at ``sample_rate``; raise ManifestError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: audio file not found")
    return probe_audio_file(str(path), str(path), sample_rate)


def probe_audio_file(file, where: str, sample_rate: int) -> float:
    """``probe_audio`` for an open file or a path, ``where`` naming it in errors (e.g. archive and member)."""
    try:
        info = sf.info(file)
    except Exception as exc:  # soundfile raises its own error types, all meaning "unreadable"
        raise ManifestError(f"{where}: unreadable audio ({exc}); re-encode it as WAV or FLAC or drop it") from exc
    if info.frames <= 0:
        raise ManifestError(f"{where}: zero-length audio; drop it from the manifest")
    source = file if isinstance(file, str) else "in.wav"  # the sox examples name a path
    if info.samplerate != sample_rate:
        raise ManifestError(
            f"{where}: sample rate {info.samplerate} Hz, the model expects {sample_rate} Hz; "
            f"resample it, e.g. `sox {source} -r {sample_rate} out.wav`"
        )
    if info.channels != 1:
        raise ManifestError(f"{where}: {info.channels} channels, expected mono; mix it down, e.g. `sox {source} -c 1 out.wav`")
    return info.frames / info.samplerate


def manifest_items(path: str | Path) -> Iterator[tuple[int, str, dict]]:
    """Each line of a manifest as (line number, "path:line", JSON object) once its audio_filepath and duration check."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(item, dict) or "audio_filepath" not in item:
                raise ManifestError(f'{where}: each line must be a JSON object with "audio_filepath"')
            duration = item.get("duration")
            if not isinstance(duration, (int, float)) or not math.isfinite(duration) or duration <= 0:
                raise ManifestError(f'{where}: "duration" must be a positive number of seconds, got {duration!r}')
            yield line_no, where, item


def audio_path(manifest: str | Path, audio_filepath: str) -> Path:
    """A manifest line's audio path, absolute: a relative one is relative to the manifest's folder (as NeMo reads it)."""
    audio = Path(audio_filepath)
    return audio if audio.is_absolute() else Path(manifest).parent / audio


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """Parse a manifest without touching the audio. Paths come back absolute."""
    path = Path(path)
    entries = []
    for line_no, _, item in manifest_items(path):
        audio = audio_path(path, item["audio_filepath"])
        entries.append(ManifestEntry(str(audio), float(item["duration"]), str(item.get("text", "")), line_no))
    if not entries:
        raise ManifestError(f"{path}: empty manifest (no utterances)")
    return entries


def whole_recording_cut(cut: dict, where: str, source_type: str, fix: str) -> None:
    """Refuse a Lhotse cut that is not one whole recording stored as ``source_type``: a random crop reads a
    recording from its start to the cut's duration."""
    sources = cut.get("recording", {}).get("sources", [])
    if cut.get("type") != "MonoCut" or cut.get("start", 0) != 0 or [s.get("type") for s in sources] != [source_type]:
        raise ManifestError(
            f"{where}: cut {cut.get('id')} is not a whole recording (a MonoCut from 0 s of one {source_type!r} "
            f"source); {fix}"
        )


def read_lhotse_cuts(path: str | Path) -> list[ManifestEntry]:
    """A Lhotse cut manifest (``cuts.jsonl.gz``) of whole recordings on disk, as manifest entries (no audio read)."""
    from lhotse.serialization import load_jsonl

    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: cut manifest not found")
    entries = []
    for line_no, cut in enumerate(load_jsonl(path), start=1):
        whole_recording_cut(cut, f"{path}:{line_no}", "file", "give cuts of whole audio files")
        source = cut["recording"]["sources"][0]["source"]
        text = " ".join(sup.get("text") or "" for sup in cut.get("supervisions", [])).strip()
        entries.append(ManifestEntry(source, float(cut["duration"]), text, line_no))
    if not entries:
        raise ManifestError(f"{path}: empty cut manifest (no cuts)")
    return entries


def within_duration_limits(duration: float, min_duration: float | None, max_duration: float | None) -> bool:
    """Whether NeMo keeps an utterance of ``duration`` seconds under its ``min_duration``/``max_duration`` (None: no limit)."""
    return (min_duration is None or duration >= min_duration) and (max_duration is None or duration <= max_duration)


def validate_manifest(
    path: str | Path,
    sample_rate: int,
    min_duration: float | None = None,
    max_duration: float | None = None,
    entries: Sequence[ManifestEntry] | None = None,
) -> ManifestReport:
    """Check every line and every audio file of a manifest (or ``entries`` read from ``path`` another way, e.g.
    ``read_lhotse_cuts``); raise ManifestError on the first bad one.

    Entries outside [min_duration, max_duration] are not errors (NeMo drops them by design) but are
    counted in the report, and a manifest left with no usable entry is an error.
    """
    report = ManifestReport(Path(path))
    for entry in read_manifest(path) if entries is None else entries:
        try:
            real = probe_audio(entry.audio_filepath, sample_rate)
        except ManifestError as exc:
            raise ManifestError(f"{path}:{entry.line_no}: {exc}") from None
        if abs(real - entry.duration) > DURATION_TOLERANCE_S:
            raise ManifestError(
                f"{path}:{entry.line_no}: duration says {entry.duration:.3f} s but {entry.audio_filepath} "
                f"lasts {real:.3f} s; rebuild the manifest with scripts/build_manifest.py"
            )
        (report.entries if within_duration_limits(entry.duration, min_duration, max_duration)
         else report.out_of_range).append(entry)
    if not report.entries:
        raise ManifestError(
            f"{path}: all {len(report.out_of_range)} utterances lie outside the duration limits "
            f"[{min_duration}, {max_duration}] s; widen min_duration/max_duration"
        )
    return report


def transcript_for(audio: Path) -> str:
    """The transcript of an audio file: the text of a sidecar ``<stem>.txt`` if there is one."""
    sidecar = audio.with_suffix(".txt")
    return sidecar.read_text(encoding="utf-8").strip() if sidecar.is_file() else ""


def scan_audio_dir(audio_dir: str | Path, sample_rate: int) -> list[ManifestEntry]:
    """Every WAV/FLAC under ``audio_dir`` (sorted), validated, with durations and sidecar transcripts."""
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise ManifestError(f"{audio_dir}: not a directory")
    files = sorted(p for p in audio_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ManifestError(f"{audio_dir}: no {'/'.join(AUDIO_SUFFIXES)} files found")
    return [ManifestEntry(str(p.resolve()), round(probe_audio(p, sample_rate), 4), transcript_for(p)) for p in files]


def write_manifest(entries: Iterable[ManifestEntry], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(e.to_json() + "\n" for e in entries), encoding="utf-8")
    return path


def split_entries(
    entries: Sequence[ManifestEntry], val_fraction: float, seed: int
) -> tuple[list[ManifestEntry], list[ManifestEntry]]:
    """Deterministic train/validation split; both sides keep at least one entry when there are two or more."""
    if not 0.0 <= val_fraction < 1.0:
        raise ManifestError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    order = list(range(len(entries)))
    random.Random(seed).shuffle(order)
    num_val = round(len(entries) * val_fraction)
    if val_fraction > 0 and len(entries) >= 2:
        num_val = min(max(num_val, 1), len(entries) - 1)
    val_ids = set(order[:num_val])
    train = [e for i, e in enumerate(entries) if i not in val_ids]
    val = [e for i, e in enumerate(entries) if i in val_ids]
    return train, val


def build_manifests(
    audio_dir: str | Path, out_dir: str | Path, sample_rate: int = 16000, val_fraction: float = 0.1, seed: int = 0
) -> dict[str, Path]:
    """Folder of audio -> ``train.json`` (and ``val.json`` when val_fraction > 0) in ``out_dir``."""
    train, val = split_entries(scan_audio_dir(audio_dir, sample_rate), val_fraction, seed)
    paths = {"train": write_manifest(train, Path(out_dir) / "train.json")}
    if val:
        paths["val"] = write_manifest(val, Path(out_dir) / "val.json")
    return paths
