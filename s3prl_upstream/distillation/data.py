"""Distillation data: seeded random crops from NeMo manifests, NeMo tarred datasets, Lhotse cut manifests or Lhotse
Shar, batched by length, sharded over DDP ranks.

A ``CropPlan`` (the DataLoader's sampler) decides everything in the main process from (seed, epoch):
which utterances go together (sorted by duration, so a batch wastes little audio), one crop length per
batch (the crop limit or the shortest utterance of the batch, so no padding is ever needed), each crop's
start, and which rank gets which batch. ``CropDataset`` only reads the planned samples with soundfile.

Tarred data (NeMo's ``audio_{0..N-1}.tar`` + tarred manifest) is indexed once before training: every member is
found and its header read, and a crop then seeks into its archive. Random access is what the plan needs (NeMo's
reader streams the archives in order), and the same manifest durations give the same plan as the plain manifest.
Lhotse Shar is indexed the same way (its cuts list the utterances and durations, its recording archives hold the
audio); a Lhotse cut manifest of whole audio files is read as a NeMo manifest. The plan's duration-sorted batches are the recipe's duration bucketing: Lhotse's bucketing sampler streams
cuts too, so it cannot give the crops at random places that the plan draws.
"""

from __future__ import annotations

import logging
import math
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import lightning.pytorch as pl
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from nemo_streaming_ssl.data.manifest import (
    DURATION_TOLERANCE_S, ManifestEntry, ManifestError, read_lhotse_cuts, validate_manifest,
)
from nemo_streaming_ssl.data.tarred import MAKE_TOOL, TarredMember, index_lhotse_shar, index_tarred_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CropRequest:
    """Read ``num_samples`` samples of utterance ``index`` starting at sample ``start``."""

    index: int
    start: int
    num_samples: int


@dataclass(frozen=True)
class TarredEntry:
    """A tarred manifest line or Shar cut: its member's place in the archive, and its duration (the plan's length)."""

    member: TarredMember
    duration: float
    line_no: int


def usable_samples(entry: ManifestEntry | TarredEntry, sample_rate: int) -> int:
    """Samples we may read: the manifest duration less validation's tolerance, so a crop never runs past the file."""
    return int((entry.duration - DURATION_TOLERANCE_S) * sample_rate)


class CropPlan(Sampler[list[CropRequest]]):
    """Yields one list of CropRequest per batch for this rank; lengths are in samples.

    Every rank builds the same plan from (seed, epoch) and takes every ``num_replicas``-th batch, so all
    ranks run the same number of steps: the last batches that do not fill a round are dropped, or with
    ``wrap`` (validation, where every rank needs a batch) the round is filled by repeating the first
    batches. Batches are formed from utterances sorted by length (ties shuffled per epoch); with
    ``shuffle`` the batch order and crop starts change every epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        max_crop_samples: int,
        seed: int,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        wrap: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.max_crop_samples = max_crop_samples
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.resume_batch = 0  # batches of the current epoch already trained before a resume; used once
        total = self.total_batches = math.ceil(len(self.lengths) / batch_size)  # of all ranks together
        self.num_batches = math.ceil(total / num_replicas) if wrap else total // num_replicas  # per rank
        if self.num_batches == 0:
            raise ManifestError(
                f"{len(self.lengths)} utterances make {total} batches of {batch_size}, fewer than the "
                f"{num_replicas} ranks; lower the batch size or add data"
            )

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at every epoch start: a new shuffle and new crops, the same on every rank."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def plan(self) -> list[list[CropRequest]]:
        """All batches of this epoch for all ranks, in order (rank r takes every num_replicas-th)."""
        rng = random.Random(self.seed * 1_000_003 + (self.epoch if self.shuffle else 0))
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        order.sort(key=lambda i: self.lengths[i])  # stable: equal lengths keep the shuffled order
        batches = []
        for first in range(0, len(order), self.batch_size):
            members = order[first : first + self.batch_size]
            crop = min(self.max_crop_samples, min(self.lengths[i] for i in members))
            batches.append([CropRequest(i, rng.randint(0, self.lengths[i] - crop), crop) for i in members])
        if self.shuffle:
            rng.shuffle(batches)
        needed = self.num_batches * self.num_replicas
        return (batches * math.ceil(needed / len(batches)))[:needed]

    def __iter__(self) -> Iterator[list[CropRequest]]:
        mine = self.plan()[self.rank :: self.num_replicas]
        skip, self.resume_batch = self.resume_batch, 0
        return iter(mine[skip:])


class CropDataset(Dataset):
    """Reads planned crops: ``dataset[list of CropRequest] -> {"wav": [B, S] float32, "wav_lengths": [B]}``."""

    def __init__(self, entries: Sequence[ManifestEntry | TarredEntry]):
        self.entries = list(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, request: CropRequest) -> torch.Tensor:
        entry = self.entries[request.index]
        crop = dict(start=request.start, frames=request.num_samples, dtype="float32")
        if isinstance(entry, TarredEntry):
            with entry.member.open() as member:
                audio, _ = sf.read(member, **crop)
            where, fix = f"{entry.member.archive}: member {entry.member.name}", f"remake the archives with {MAKE_TOOL}"
        else:
            audio, _ = sf.read(entry.audio_filepath, **crop)
            where, fix = entry.audio_filepath, "rebuild the manifest with scripts/build_manifest.py"
        if len(audio) != request.num_samples:  # the audio changed since it was checked
            raise ManifestError(
                f"{where}: holds fewer samples than its manifest duration {entry.duration} s (line {entry.line_no}); {fix}"
            )
        return torch.from_numpy(audio)

    def __getitem__(self, batch: list[CropRequest]) -> dict[str, torch.Tensor]:
        wav = torch.stack([self.read(request) for request in batch])
        return {"wav": wav, "wav_lengths": torch.full((len(batch),), wav.shape[1], dtype=torch.long)}


class PlannedLoader(DataLoader):
    """A DataLoader over a CropPlan. Its place in an epoch is restored from the global step on resume
    (DistillDataModule.train_dataloader); the state Lightning stores is the plan's size, to catch a changed plan."""

    def state_dict(self) -> dict[str, int]:
        return {"batches_per_epoch": len(self.sampler)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("batches_per_epoch") != len(self.sampler):
            log.warning(
                "the data plan changed since the checkpoint (%s -> %d batches per epoch: other manifest, batch size "
                "or device count); the resumed epoch continues at a position computed on the new plan",
                state.get("batches_per_epoch"), len(self.sampler),
            )


def load_entries(
    manifest: str | Path | None,
    sample_rate: int,
    min_seconds: float,
    tarred_audio_filepaths: str | None = None,
    shar_path: str | None = None,
    cuts_path: str | None = None,
) -> list[ManifestEntry] | list[TarredEntry]:
    """Validate a manifest (every line and audio header; with archives, every member), a Lhotse cut manifest (every
    cut and audio header) or a Lhotse Shar folder (every cut and member) and return its usable entries; logs how
    many there are and what was skipped."""
    if cuts_path:
        cuts = validate_manifest(cuts_path, sample_rate, min_duration=min_seconds, entries=read_lhotse_cuts(cuts_path))
        log.info(cuts.summary())
        return cuts.entries
    if shar_path:
        report = index_lhotse_shar(shar_path, sample_rate, min_duration=min_seconds)
    elif tarred_audio_filepaths:
        report = index_tarred_dataset(manifest, tarred_audio_filepaths, sample_rate, min_duration=min_seconds)
    else:
        plain = validate_manifest(manifest, sample_rate, min_duration=min_seconds)
        log.info(plain.summary())
        return plain.entries
    for archive in report.archives:
        try:  # a crop seeks to its member, which a compressed stream cannot do
            tarfile.open(archive, "r:").close()
        except tarfile.ReadError:
            raise ManifestError(
                f"{archive}: a compressed archive; random crops need plain .tar archives: remake them with {MAKE_TOOL}"
            ) from None
    log.info(report.summary())
    return [TarredEntry(report.member(line), line.duration, line.line_no) for line in report.usable]


class DistillDataModule(pl.LightningDataModule):
    """Train/validation crops from two NeMo manifests, each plain or tarred (with its archives' brace pattern), or
    from Lhotse cut manifests or Shar folders instead. ``prepare()`` validates both; call it before training."""

    def __init__(
        self,
        train_manifest: str | None,
        val_manifest: str | None,
        train_tarred_audio_filepaths: str | None = None,
        val_tarred_audio_filepaths: str | None = None,
        train_shar_path: str | None = None,
        val_shar_path: str | None = None,
        train_cuts_path: str | None = None,
        val_cuts_path: str | None = None,
        sample_rate: int = 16000,
        crop_seconds: float = 8.0,
        val_crop_seconds: float = 8.0,
        min_seconds: float = 1.0,
        batch_size: int = 8,
        val_batch_size: int = 8,
        num_workers: int = 4,
        seed: int = 0,
    ):
        super().__init__()
        for split, sources in (
            ("train", (train_manifest, train_shar_path, train_cuts_path)), ("val", (val_manifest, val_shar_path, val_cuts_path))
        ):
            if sum(map(bool, sources)) != 1:
                raise ValueError(
                    f"give exactly one of data.{split}_manifest, data.{split}_shar_path and data.{split}_cuts_path, "
                    f"got {', '.join(map(repr, sources))}"
                )
        if min_seconds <= DURATION_TOLERANCE_S:
            raise ValueError(f"data.min_seconds must exceed {DURATION_TOLERANCE_S} s (manifest duration tolerance)")
        self.train_manifest, self.val_manifest = train_manifest, val_manifest
        self.train_archives, self.val_archives = train_tarred_audio_filepaths, val_tarred_audio_filepaths
        self.train_shar, self.val_shar = train_shar_path, val_shar_path
        self.train_cuts, self.val_cuts = train_cuts_path, val_cuts_path
        self.sample_rate = sample_rate
        self.crop_samples = round(crop_seconds * sample_rate)
        self.val_crop_samples = round(val_crop_seconds * sample_rate)
        self.min_seconds = min_seconds
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_entries: list[ManifestEntry] | list[TarredEntry] | None = None
        self.val_entries: list[ManifestEntry] | list[TarredEntry] | None = None

    def prepare(self) -> None:
        """Read and check both manifests (idempotent); raises ManifestError naming the file, line (or archive and
        member) and fix."""
        if self.train_entries is None:
            self.train_entries = load_entries(
                self.train_manifest, self.sample_rate, self.min_seconds, self.train_archives, self.train_shar, self.train_cuts
            )
            self.val_entries = load_entries(
                self.val_manifest, self.sample_rate, self.min_seconds, self.val_archives, self.val_shar, self.val_cuts
            )

    def setup(self, stage: str) -> None:
        self.prepare()

    def _loader(
        self, entries: list[ManifestEntry] | list[TarredEntry], batch_size: int, crop_samples: int, shuffle: bool
    ) -> PlannedLoader:
        trainer = self.trainer
        plan = CropPlan(
            [usable_samples(e, self.sample_rate) for e in entries],
            batch_size,
            crop_samples,
            seed=self.seed,
            shuffle=shuffle,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            wrap=not shuffle,
        )
        # batch_size=None: the sampler yields whole batches and the dataset reads them (one batch per worker task)
        return PlannedLoader(
            CropDataset(entries),
            sampler=plan,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> PlannedLoader:
        loader = self._loader(self.train_entries, self.batch_size, self.crop_samples, shuffle=True)
        plan = loader.sampler
        left_over = plan.total_batches - plan.num_batches * plan.num_replicas
        log.info(
            "training on %d utterances: %d batches of up to %d each epoch, %d per rank on %d ranks%s",
            len(self.train_entries), plan.total_batches, self.batch_size, plan.num_batches, plan.num_replicas,
            f"; {left_over} batches (different ones each epoch) do not fill a round of ranks and wait for a later epoch"
            if left_over else "",
        )
        if self.trainer is not None and self.trainer.global_step > 0:
            # Resumed run (Lightning restores the step before asking for data): every epoch has the same
            # number of batches, so the step says where in the restored epoch's seeded plan to continue.
            plan.resume_batch = self.trainer.global_step * self.trainer.accumulate_grad_batches % len(plan)
            log.info("resuming at batch %d of %d of epoch %d", plan.resume_batch, len(plan), self.trainer.current_epoch)
        return loader

    def val_dataloader(self) -> PlannedLoader:
        return self._loader(self.val_entries, self.val_batch_size, self.val_crop_samples, shuffle=False)
