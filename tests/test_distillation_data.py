"""Distillation data: seeded crops from NeMo manifests, tarred audio and Lhotse Shar, length batching, DDP sharding,
errors before training."""

from __future__ import annotations

import gzip
import logging
import re

import pytest
import soundfile as sf
import torch

from nemo_streaming_ssl.data.manifest import ManifestError, read_manifest
from s3prl_upstream.distillation.data import CropDataset, CropPlan, DistillDataModule, TarredEntry
from tests.tarred_support import (  # noqa: F401 (fixtures)
    archive_members, copy_tarred, exact_corpus, rewrite_archive, shar, tarred,
)


def plan_lengths():
    return [16000 + 1111 * ((7 * i) % 13) for i in range(26)]


def test_crop_plan_is_seeded_and_batches_by_length():
    lengths = plan_lengths()
    plan = CropPlan(lengths, batch_size=4, max_crop_samples=20000, seed=3)
    first = list(plan)
    assert first == list(CropPlan(lengths, batch_size=4, max_crop_samples=20000, seed=3))  # same seed, same plan
    plan.set_epoch(1)
    assert list(plan) != first  # a new epoch reshuffles and recrops
    assert len(first) == len(plan) == 7
    sorted_lengths = sorted(lengths)
    for batch in first:
        crop = batch[0].num_samples
        assert all(r.num_samples == crop for r in batch)  # one length per batch: no padding
        assert crop == min(20000, min(lengths[r.index] for r in batch))
        assert all(0 <= r.start and r.start + crop <= lengths[r.index] for r in batch)
        # members are neighbours in length order
        ranks = sorted(sorted_lengths.index(lengths[r.index]) for r in batch)
        assert ranks[-1] - ranks[0] <= 4 + 1
    assert sorted(r.index for b in first for r in b) == list(range(26))  # every utterance once


def test_crop_plan_resumes_inside_an_epoch():
    lengths = plan_lengths()
    plan = CropPlan(lengths, 4, 20000, seed=3)
    plan.set_epoch(2)
    whole = list(plan)
    plan.resume_batch = 3
    assert list(plan) == whole[3:]  # the resumed epoch continues where the checkpoint left it
    assert list(plan) == whole  # and only that once


def test_crop_plan_shards_ranks_evenly():
    lengths = plan_lengths()
    shards = [list(CropPlan(lengths, 4, 20000, seed=0, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(s) for s in shards] == [2, 2, 2]  # 7 batches -> 2 per rank, the 7th dropped on all ranks alike
    seen = [r.index for s in shards for b in s for r in b]
    assert len(seen) == len(set(seen))
    with pytest.raises(ManifestError, match="fewer than the 8 ranks"):
        CropPlan(lengths[:5], 4, 20000, seed=0, num_replicas=8, rank=0)
    # validation wraps instead: every rank gets a batch even from a tiny set
    val = [list(CropPlan(lengths[:5], 4, 20000, seed=0, shuffle=False, num_replicas=3, rank=r, wrap=True)) for r in range(3)]
    assert [len(s) for s in val] == [1, 1, 1] and val[2] == val[0]


def test_crop_dataset_reads_the_planned_samples(speech_corpus):
    entries = read_manifest(speech_corpus["train"])
    dataset = CropDataset(entries)
    plan = CropPlan([int(e.duration * 16000) - 800 for e in entries], 3, 8000, seed=5)
    batch_plan = next(iter(plan))
    batch = dataset[batch_plan]
    assert batch["wav"].shape == (3, batch_plan[0].num_samples) and batch["wav"].dtype == torch.float32
    assert batch["wav_lengths"].tolist() == [batch_plan[0].num_samples] * 3
    request = batch_plan[1]
    audio, _ = sf.read(entries[request.index].audio_filepath, dtype="float32")
    torch.testing.assert_close(batch["wav"][1], torch.from_numpy(audio[request.start : request.start + request.num_samples]))


def test_data_module_loads_manifests_and_rejects_bad_ones(speech_corpus, tmp_path):
    data = DistillDataModule(speech_corpus["train"], speech_corpus["val"], crop_seconds=1.0, batch_size=4, num_workers=0)
    data.prepare()
    batch = next(iter(data.train_dataloader()))
    assert batch["wav"].shape[0] == 4 and batch["wav"].shape[1] <= 16000
    # validation crops are fixed: two passes read the same audio
    first, second = list(data.val_dataloader()), list(data.val_dataloader())
    assert len(first) == len(second) > 0
    assert all(torch.equal(a["wav"], b["wav"]) for a, b in zip(first, second))

    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(ManifestError, match="empty manifest"):
        DistillDataModule(empty, speech_corpus["val"]).prepare()
    with pytest.raises(ManifestError, match="outside the duration limits"):
        DistillDataModule(speech_corpus["train"], speech_corpus["val"], min_seconds=600.0).prepare()
    with pytest.raises(ValueError, match="min_seconds"):
        DistillDataModule(speech_corpus["train"], speech_corpus["val"], min_seconds=0.0)


def tarred_and_plain(speech_corpus, tarred, **kwargs):
    """Data modules over the same training utterances: the tarred set and the plain manifest it was made from."""
    plain = DistillDataModule(speech_corpus["train"], speech_corpus["val"], **kwargs)
    from_tarred = DistillDataModule(tarred.manifest, speech_corpus["val"], train_tarred_audio_filepaths=tarred.archives, **kwargs)
    plain.prepare()
    from_tarred.prepare()
    return plain, from_tarred


def test_tarred_data_gives_the_same_batches_as_its_plain_manifest(speech_corpus, tarred, caplog):
    """Same manifest durations, same seed: the same crop plan, read from the archives (in a worker process) bitwise
    as from the files, in every epoch."""
    caplog.set_level(logging.INFO, logger="s3prl_upstream.distillation.data")
    plain, from_tarred = tarred_and_plain(speech_corpus, tarred, crop_seconds=1.0, batch_size=4, num_workers=0)
    from_tarred.num_workers = 1
    assert f"{tarred.manifest}: 22 utterances, 0.022 h in 2 archives" in caplog.text
    assert all(isinstance(entry, TarredEntry) for entry in from_tarred.train_entries)
    for epoch in (0, 1):
        loaders = [module.train_dataloader() for module in (plain, from_tarred)]
        for loader in loaders:
            loader.sampler.set_epoch(epoch)
        batches = [list(loader) for loader in loaders]
        assert len(batches[0]) == len(batches[1]) == 6
        for a, b in zip(*batches):
            assert torch.equal(a["wav"], b["wav"]) and torch.equal(a["wav_lengths"], b["wav_lengths"])
    assert "training on 22 utterances: 6 batches of up to 4 each epoch, 6 per rank on 1 ranks" in caplog.text


@pytest.mark.parametrize("fault", ["missing", "corrupt"])
def test_bad_tarred_member_stops_before_training_naming_archive_and_member(fault, speech_corpus, tarred, tmp_path):
    manifest, archives = copy_tarred(tarred, tmp_path / "tarred")
    archive = tmp_path / "tarred" / "audio_1.tar"
    member = sorted(archive_members(archive))[2]
    rewrite_archive(archive, **{"drop" if fault == "missing" else "corrupt": member})
    expected = {
        "missing": rf"member {member} is missing \({re.escape(str(manifest))}:\d+ names it with shard_id 1\).*Remake",
        "corrupt": rf"member {member}: unreadable audio .*re-encode it",
    }[fault]
    data = DistillDataModule(manifest, speech_corpus["val"], train_tarred_audio_filepaths=archives, num_workers=0)
    with pytest.raises(ManifestError, match=rf"^{re.escape(str(archive))}: {expected}"):
        data.prepare()


def test_compressed_archive_is_refused_naming_it(speech_corpus, tarred, tmp_path):
    manifest, archives = copy_tarred(tarred, tmp_path / "tarred")
    archive = tmp_path / "tarred" / "audio_0.tar"
    archive.write_bytes(gzip.compress(archive.read_bytes()))  # still found and probed by tarfile's auto-detection
    data = DistillDataModule(manifest, speech_corpus["val"], train_tarred_audio_filepaths=archives, num_workers=0)
    with pytest.raises(ManifestError, match=rf"^{re.escape(str(archive))}: a compressed archive; .*remake them"):
        data.prepare()


def same_batches_as_the_manifest(corpus, **source) -> DistillDataModule:
    """The training data from ``source`` (e.g. train_shar_path=...) instead of the corpus manifest gives the same
    6 batches bitwise; returns its data module."""
    settings = dict(crop_seconds=1.0, batch_size=4, num_workers=0)
    modules = [DistillDataModule(corpus["train"], corpus["val"], **settings),
               DistillDataModule(None, corpus["val"], **source, **settings)]
    for module in modules:
        module.prepare()
    batches = [list(module.train_dataloader()) for module in modules]
    assert len(batches[0]) == len(batches[1]) == 6
    for a, b in zip(*batches):
        assert torch.equal(a["wav"], b["wav"])
    return modules[1]


def test_lhotse_shar_gives_the_same_batches_as_its_plain_manifest(exact_corpus, shar, caplog):
    """Shar made from the manifest: its cuts' durations give the same crop plan, read from the recording archives
    bitwise as from the files."""
    caplog.set_level(logging.INFO, logger="s3prl_upstream.distillation.data")
    from_shar = same_batches_as_the_manifest(exact_corpus, train_shar_path=str(shar))
    assert f"{shar}: 22 utterances, 0.022 h in 2 archives" in caplog.text
    assert all(isinstance(entry, TarredEntry) for entry in from_shar.train_entries)


def test_bad_lhotse_shar_stops_before_training_naming_archive_and_cut(exact_corpus, shar, tmp_path):
    folder = tmp_path / "shar"
    folder.mkdir()
    for path in shar.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    archive = folder / "recording.000001.tar"
    member = sorted(name for name in archive_members(archive) if name.endswith(".flac"))[1]
    rewrite_archive(archive, drop=member)
    cut = member.removesuffix(".flac")
    data = DistillDataModule(None, exact_corpus["val"], train_shar_path=str(folder), num_workers=0)
    cuts = re.escape(str(folder / "cuts.000001.jsonl.gz"))
    with pytest.raises(ManifestError, match=rf"^{re.escape(str(archive))}: member {cut} is missing \({cuts}:\d+ names it"):
        data.prepare()
    (folder / "cuts.000001.jsonl.gz").unlink()
    with pytest.raises(ManifestError, match=r"found 1 cut files and 2 recording archives; write it with .* --shar"):
        data.prepare()
    with pytest.raises(ValueError, match="exactly one of data.train_manifest, data.train_shar_path and data.train_cuts"):
        DistillDataModule(exact_corpus["train"], exact_corpus["val"], train_shar_path=str(folder))


def test_lhotse_cut_manifest_gives_the_same_batches_as_its_plain_manifest(exact_corpus, tmp_path):
    """A cut manifest of the same files, written by Lhotse: the same entries and batches; a cut of part of a
    recording or a missing file stops it naming the cut's line."""
    from lhotse import CutSet, Recording, RecordingSet
    from lhotse.serialization import save_to_jsonl

    manifest = read_manifest(exact_corpus["train"])
    recordings = RecordingSet.from_recordings(Recording.from_file(entry.audio_filepath) for entry in manifest)
    cuts_path = tmp_path / "cuts.jsonl.gz"
    CutSet.from_manifests(recordings=recordings).to_file(cuts_path)
    from_cuts = same_batches_as_the_manifest(exact_corpus, train_cuts_path=str(cuts_path))
    assert [(e.audio_filepath, e.duration) for e in from_cuts.train_entries] == [(e.audio_filepath, e.duration) for e in manifest]
    cuts = CutSet.from_file(cuts_path)
    bad = tmp_path / "bad.jsonl.gz"
    save_to_jsonl([cuts[0].truncate(offset=0.5, preserve_id=True).to_dict()], bad)
    with pytest.raises(ManifestError, match=rf"^{re.escape(str(bad))}:1: cut {cuts[0].id} is not a whole recording"):
        DistillDataModule(None, exact_corpus["val"], train_cuts_path=str(bad), num_workers=0).prepare()
    moved = cuts[2].to_dict()
    moved["recording"]["sources"][0]["source"] = str(tmp_path / "gone.wav")
    save_to_jsonl([cuts[1].to_dict(), moved], bad)
    with pytest.raises(ManifestError, match=rf"^{re.escape(str(bad))}:2: .*gone.wav: audio file not found"):
        DistillDataModule(None, exact_corpus["val"], train_cuts_path=str(bad), num_workers=0).prepare()
