"""NeMo's tarred audio datasets (and Lhotse Shar): make them from manifests, and check the tarred ones before training.

NeMo's layout (what its GitHub ``scripts/speech_recognition/convert_to_tarred_audio_dataset.py`` writes and
``is_tarred: true`` reads): archives ``audio_0.tar ... audio_{N-1}.tar`` holding the audio files under their base
names, and ``tarred_audio_manifest.json`` whose lines name a member (``audio_filepath``) and its archive
(``shard_id``). A run points ``tarred_audio_filepaths`` at ``<dir>/audio_{0..N-1}.tar`` and ``manifest_filepath``
at that manifest.

NeMo streams the archives and trusts them: a manifest line whose member is missing is never read although the
epoch length still counts it; with ``tarred_shard_strategy: scatter`` (its default) the archives left over when
their number is not a multiple of the processes are never read; and processes whose archives hold different
numbers of batches hang at the end of an epoch. ``check_tarred_dataset`` finds each of these before training,
naming the archive and member. ``index_tarred_dataset`` (its first half) also says where each member's bytes lie, for
readers that crop at random places (the distillation recipe) instead of streaming; ``index_lhotse_shar`` does the same
for Lhotse Shar.
"""

from __future__ import annotations

import json
import math
import random
import tarfile
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

from .manifest import (
    DURATION_TOLERANCE_S, ManifestError, manifest_items, probe_audio_file, validate_manifest, whole_recording_cut,
    within_duration_limits,
)

TARRED_MANIFEST = "tarred_audio_manifest.json"
MAKE_TOOL = "scripts/make_tarred_dataset.py"
SHAR_SIDE_MEMBERS = (".json", ".nodata", ".nometa")  # a Shar recording archive's members that are not audio


@dataclass(frozen=True)
class TarredDataset:
    """What ``make_tarred_dataset`` wrote: the manifest, the brace pattern of the archives, what was left out."""

    manifest: Path
    archives: str
    num_shards: int
    per_shard: int
    left_out: int

    def summary(self) -> str:
        text = f"{self.num_shards} archives of {self.per_shard} utterances: {self.archives}; manifest {self.manifest}"
        if self.left_out:
            text += (
                f"\n{self.left_out} utterances left out so that every archive holds the same number "
                f"(DDP processes must see equal counts); choose --num-shards dividing the total to keep them all"
            )
        return text


def nemo_member_name(audio_filepath: str) -> str:
    """The archive member of an audio file; refused if NeMo's reader could not find it again.

    webdataset splits a member's key at the first dot of its base name and NeMo looks the key up by the
    manifest name's stem, so ``a.b.wav`` would never be read.
    """
    name = Path(audio_filepath).name
    if name.count(".") != 1:
        raise ManifestError(f"{audio_filepath}: a tarred member needs exactly one dot in its name (stem.ext); rename it")
    return name


def make_tarred_dataset(
    manifests: Sequence[str | Path], out_dir: str | Path, num_shards: int, sample_rate: int = 16000, seed: int | None = None
) -> TarredDataset:
    """Write NeMo's tarred layout from NeMo manifests: every audio file is checked first, archives hold equal counts.

    ``seed`` shuffles the utterances across archives (None keeps the manifests' order).
    """
    entries = [entry for manifest in manifests for entry in validate_manifest(manifest, sample_rate).entries]
    owners: dict[str, str] = {}
    for entry in entries:
        name = nemo_member_name(entry.audio_filepath)
        if owners.setdefault(name, entry.audio_filepath) != entry.audio_filepath:
            raise ManifestError(
                f"{entry.audio_filepath} and {owners[name]} would both be member {name}: NeMo finds members by base "
                "name; rename one of them"
            )
    if not 1 <= num_shards <= len(entries):
        raise ManifestError(f"--num-shards must lie in [1, {len(entries)}] (the number of utterances), got {num_shards}")
    if seed is not None:
        random.Random(seed).shuffle(entries)
    per_shard = len(entries) // num_shards
    out_dir = Path(out_dir).resolve()  # the printed pattern works from any folder
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for shard in range(num_shards):
        with tarfile.open(out_dir / f"audio_{shard}.tar", "w") as archive:
            for entry in entries[shard * per_shard : (shard + 1) * per_shard]:
                name = Path(entry.audio_filepath).name
                archive.add(entry.audio_filepath, arcname=name)
                line = {"audio_filepath": name, "duration": entry.duration, "text": entry.text, "shard_id": shard}
                lines.append(json.dumps(line))
    manifest = out_dir / TARRED_MANIFEST
    manifest.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return TarredDataset(
        manifest, str(out_dir / f"audio_{{0..{num_shards - 1}}}.tar"), num_shards, per_shard, len(entries) - len(lines)
    )


def make_lhotse_shar(manifests: Sequence[str | Path], out_dir: str | Path, num_shards: int, sample_rate: int = 16000) -> dict:
    """Lhotse Shar (``cuts.*.jsonl.gz`` + ``recording.*.tar``) from NeMo manifests, read by NeMo's own Lhotse adapter;
    audio stored as FLAC (lossless). Every audio file is checked first. Returns Lhotse's listing of the shards."""
    from lhotse import CutSet
    from nemo.collections.common.data.lhotse.nemo_adapters import LazyNeMoIterator

    total = sum(len(validate_manifest(manifest, sample_rate).entries) for manifest in manifests)
    if not 1 <= num_shards <= total:
        raise ManifestError(f"--num-shards must lie in [1, {total}] (the number of utterances), got {num_shards}")
    cuts = CutSet(LazyNeMoIterator(str(manifests[0])))
    for manifest in manifests[1:]:
        cuts = cuts + CutSet(LazyNeMoIterator(str(manifest)))
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    return cuts.to_shar(out_dir, fields={"recording": "flac"}, shard_size=math.ceil(total / num_shards))


def archive_paths(tarred_audio_filepaths, shard_strategy: str = "scatter", world_size: int = 1, rank: int = 0) -> list[str]:
    """The archives one process reads, expanded and partitioned by NeMo's own function (same braces, same split)."""
    from nemo.collections.asr.data.audio_to_text import expand_sharded_filepaths
    from nemo.utils import logging

    if not isinstance(tarred_audio_filepaths, str):
        tarred_audio_filepaths = [str(path) for path in tarred_audio_filepaths]
    with logging.temp_verbosity(logging.ERROR):  # its "process (r) taking shards" lines would read as the run's own
        return expand_sharded_filepaths(tarred_audio_filepaths, shard_strategy, world_size, rank)


@dataclass(frozen=True)
class TarredLine:
    member: str
    shard_id: int
    duration: float
    line_no: int


@dataclass(frozen=True)
class TarredMember:
    """Where a member's bytes lie in its archive (from its tar header): read at random places without a scan."""

    archive: str
    name: str
    offset: int  # of the member's data in the archive
    size: int
    duration: float  # from the audio header

    @contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        """The member as a seekable file of its own (what soundfile needs), opening only its archive's first header."""
        info = tarfile.TarInfo(self.name)
        info.offset_data, info.size = self.offset, self.size
        with tarfile.open(self.archive, "r:") as archive:
            yield archive.extractfile(info)


@dataclass
class TarredReport:
    """What ``index_tarred_dataset`` found and, from ``check_tarred_dataset``, per process as NeMo will split the archives."""

    manifest: Path
    archives: list[str]
    usable: list[TarredLine] = field(default_factory=list)
    out_of_range: list[TarredLine] = field(default_factory=list)
    unlisted_members: int = 0
    members: dict[int, dict[str, TarredMember]] = field(default_factory=dict)  # shard_id -> member name -> location
    per_process: list[int] = field(default_factory=list)  # usable utterances each process reads per epoch
    batches: list[int] = field(default_factory=list)

    def member(self, line: TarredLine) -> TarredMember:
        return self.members[line.shard_id][line.member]

    def summary(self) -> str:
        hours = sum(line.duration for line in self.usable) / 3600.0
        text = f"{self.manifest}: {len(self.usable)} utterances, {hours:.3f} h in {len(self.archives)} archives"
        if len(self.per_process) > 1:
            text += f"; {len(self.per_process)} processes read {self.per_process} utterances = {self.batches} batches each epoch"
        elif self.batches:
            text += f"; {self.batches[0]} batches each epoch"
        if self.out_of_range:
            text += f"; {len(self.out_of_range)} more outside the duration limits are skipped"
        if self.unlisted_members:
            text += f"; {self.unlisted_members} archive members not in the manifest are ignored"
        return text


def read_tarred_manifest(path: str | Path, num_archives: int) -> list[TarredLine]:
    """Parse a tarred manifest: every line needs audio_filepath, a positive duration and a shard_id of an archive."""
    lines = []
    for line_no, where, item in manifest_items(path):
        shard_id = item.get("shard_id")
        if not isinstance(shard_id, int) or not 0 <= shard_id < num_archives:
            raise ManifestError(
                f'{where}: "shard_id" must name one of the {num_archives} archives of tarred_audio_filepaths '
                f"(0..{num_archives - 1}), got {shard_id!r}; make the data with {MAKE_TOOL}"
            )
        lines.append(TarredLine(Path(item["audio_filepath"]).name, shard_id, float(item["duration"]), line_no))
    if not lines:
        raise ManifestError(f"{path}: empty manifest (no utterances)")
    return lines


def nemo_member_key(name: str) -> str:
    return Path(name).name


def shar_member_key(name: str) -> str:
    """Lhotse Shar stores a cut's audio as ``<cut id>.<format>`` next to ``<cut id>.json`` (its recording's manifest)."""
    return name if name.endswith(SHAR_SIDE_MEMBERS) else name.rsplit(".", 1)[0]


def scan_archive(
    path: str, wanted: set[str], sample_rate: int, key: Callable[[str], str] = nemo_member_key
) -> tuple[dict[str, TarredMember], int]:
    """Probe the wanted members of one archive (headers only), found by ``key(member name)``; return the members
    present by key and the count of others."""
    if not Path(path).is_file():
        raise ManifestError(f"{path}: archive not found; check tarred_audio_filepaths")
    found, others = {}, 0
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                name = key(member.name)
                if not member.isfile():
                    continue
                if name not in wanted:
                    others += 1
                    continue
                duration = probe_audio_file(archive.extractfile(member), f"{path}: member {member.name}", sample_rate)
                found[name] = TarredMember(path, member.name, member.offset_data, member.size, duration)
    except tarfile.TarError as exc:
        raise ManifestError(f"{path}: not a readable tar archive ({exc}); remake it with {MAKE_TOOL}") from exc
    return found, others


def index_tarred_dataset(
    manifest: str | Path,
    tarred_audio_filepaths,
    sample_rate: int,
    min_duration: float | None = None,
    max_duration: float | None = None,
) -> TarredReport:
    """Find every manifest line's member in its archive; raise ManifestError on the first fault.

    Faults: a line naming a member its archive lacks, a member soundfile cannot read (or of another sample rate,
    or not mono, or lasting other than its line says). Utterances outside the duration limits and members the
    manifest does not list are counted, as NeMo skips them. ``report.member(line)`` locates each line's bytes.
    """
    if not tarred_audio_filepaths:
        raise ManifestError(f"{manifest}: tarred_audio_filepaths is not set; give the archives, e.g. '<dir>/audio_{{0..7}}.tar'")
    archives = archive_paths(tarred_audio_filepaths)
    report = TarredReport(Path(manifest), archives)
    lines = read_tarred_manifest(manifest, len(archives))
    return locate_members(
        report, lines, sample_rate, min_duration, max_duration, nemo_member_key,
        lambda line: f"{manifest}:{line.line_no}", lost="NeMo would skip it silently. ",
    )


def locate_members(
    report: TarredReport,
    lines: list[TarredLine],
    sample_rate: int,
    min_duration: float | None,
    max_duration: float | None,
    key: Callable[[str], str],
    where: Callable[[TarredLine], str],
    lost: str = "",
) -> TarredReport:
    """Scan the report's archives for the lines' members (``key`` maps a member name to a line's ``member``) and
    sort the lines into usable and out of range; ``where(line)`` names a line in errors, ``lost`` says what the
    format's own reader would do with a missing member."""
    archives = report.archives
    wanted: dict[int, set[str]] = defaultdict(set)
    for line in lines:
        wanted[line.shard_id].add(line.member)
    for shard_id, path in enumerate(archives):
        report.members[shard_id], others = scan_archive(path, wanted[shard_id], sample_rate, key)
        report.unlisted_members += others
    for line in lines:
        member = report.members[line.shard_id].get(line.member)
        if member is None:
            raise ManifestError(
                f"{archives[line.shard_id]}: member {line.member} is missing ({where(line)} names it with shard_id "
                f"{line.shard_id}); {lost}Remake the archives with {MAKE_TOOL} or drop the line"
            )
        if abs(member.duration - line.duration) > DURATION_TOLERANCE_S:
            raise ManifestError(
                f"{member.archive}: member {member.name} lasts {member.duration:.3f} s but {where(line)} says "
                f"{line.duration:.3f} s; remake the archives and their manifest with {MAKE_TOOL}"
            )
        (report.usable if within_duration_limits(line.duration, min_duration, max_duration)
         else report.out_of_range).append(line)
    if not report.usable:
        raise ManifestError(
            f"{report.manifest}: all utterances lie outside the duration limits [{min_duration}, {max_duration}] s"
        )
    return report


def index_lhotse_shar(
    shar_path: str | Path, sample_rate: int, min_duration: float | None = None, max_duration: float | None = None
) -> TarredReport:
    """``index_tarred_dataset`` for Lhotse Shar (what ``make_lhotse_shar`` writes): the cuts of ``cuts.N.jsonl.gz``
    located in ``recording.N.tar``. Only whole recordings (a cut per stored recording, as ``to_shar`` writes) are
    accepted: their duration is the audio's."""
    from lhotse.serialization import load_jsonl

    folder = Path(shar_path)
    cut_files, archives = sorted(folder.glob("cuts.*.jsonl*")), sorted(folder.glob("recording.*.tar*"))
    if not cut_files or len(cut_files) != len(archives):
        raise ManifestError(
            f"{folder}: Lhotse Shar needs cuts.N.jsonl.gz and recording.N.tar in pairs, found {len(cut_files)} cut files "
            f"and {len(archives)} recording archives; write it with {MAKE_TOOL} --shar"
        )
    lines = []
    for shard_id, cut_file in enumerate(cut_files):
        for line_no, cut in enumerate(load_jsonl(cut_file), start=1):
            whole_recording_cut(
                cut, f"{cut_file}:{line_no}", "shar", f"write the Shar from whole recordings with {MAKE_TOOL} --shar"
            )
            lines.append(TarredLine(cut["id"], shard_id, float(cut["duration"]), line_no))
    report = TarredReport(folder, [str(path) for path in archives])
    return locate_members(
        report, lines, sample_rate, min_duration, max_duration, shar_member_key,
        lambda line: f"{cut_files[line.shard_id]}:{line.line_no}",
    )


def check_tarred_dataset(
    manifest: str | Path,
    tarred_audio_filepaths,
    sample_rate: int,
    min_duration: float | None = None,
    max_duration: float | None = None,
    world_size: int = 1,
    batch_size: int = 1,
    drop_last: bool = False,
    shard_strategy: str = "scatter",
    balanced: bool = True,
) -> TarredReport:
    """Check a tarred dataset as NeMo will read it on ``world_size`` processes; raise ManifestError on the first fault.

    Faults: those of ``index_tarred_dataset``, archives that no process reads, and (``balanced``, for training)
    processes with different numbers of batches per epoch.
    """
    report = index_tarred_dataset(manifest, tarred_audio_filepaths, sample_rate, min_duration, max_duration)
    archives = report.archives
    shard_of = {path: shard_id for shard_id, path in enumerate(archives)}
    per_rank = [
        [shard_of[path] for path in archive_paths(tarred_audio_filepaths, shard_strategy, world_size, rank)]
        for rank in range(world_size)
    ]
    unread = sorted(set(range(len(archives))) - {shard for shards in per_rank for shard in shards})
    if unread:
        lost = sum(line.shard_id in unread for line in report.usable)
        raise ManifestError(
            f"{len(unread)} of {len(archives)} archives ({lost} utterances, e.g. {archives[unread[0]]}) would never be "
            f"read: NeMo's {shard_strategy} strategy gives each of {world_size} processes {len(archives) // world_size} "
            f"archives. Make a number of archives divisible by {world_size} ({MAKE_TOOL} --num-shards) or set "
            "tarred_shard_strategy=replicate"
        )
    counts = defaultdict(int)
    for line in report.usable:
        counts[line.shard_id] += 1
    report.per_process = [sum(counts[shard] for shard in shards) for shards in per_rank]
    report.batches = [n // batch_size if drop_last else math.ceil(n / batch_size) for n in report.per_process]
    if balanced and (len(set(report.batches)) > 1 or 0 in report.batches):
        detail = ", ".join(
            f"process {rank}: {n} utterances = {b} batches from {len(shards)} archives"
            for rank, (n, b, shards) in enumerate(zip(report.per_process, report.batches, per_rank))
        )
        raise ManifestError(
            f"{manifest}: processes would train on different numbers of batches per epoch ({detail}); DDP hangs "
            f"when one runs out first. Make archives of equal counts ({MAKE_TOOL}) or change batch_size"
        )
    return report
