"""Pretraining from NeMo tarred audio: the layout our tool writes, NeMo's reader on it (same batch, same loss as
the manifest loader), 2-process DDP through the pretrain script, and bad archives stopped before training."""

import json
import re
from pathlib import Path

import subprocess
import sys

import pytest
import torch
from lightning.pytorch import seed_everything
from omegaconf import open_dict

from nemo_streaming_ssl.data.manifest import ManifestError
from nemo_streaming_ssl.data.tarred import TARRED_MANIFEST, check_tarred_dataset, make_tarred_dataset
from nemo_streaming_ssl.models import StreamingNESTModel

from .nest_support import REPO_ROOT, compose_config, data_overrides, run_pretrain, tarred_overrides
from .tarred_support import archive_members, copy_tarred, rewrite_archive, tarred  # noqa: F401 (fixture)
from .test_nest_pretrain_script import global_step, last_checkpoint

LOSS_TOLERANCE = 1e-6  # same utterances, same seeds, same CPU kernels: only float noise may differ (measured: none)


def test_layout_is_nemos(tarred, speech_corpus):
    lines = [json.loads(line) for line in tarred.manifest.read_text().splitlines()]
    sources = [json.loads(line)["audio_filepath"] for line in Path(speech_corpus["train"]).read_text().splitlines()]
    assert (tarred.num_shards, tarred.per_shard, tarred.left_out) == (2, 11, 0)
    assert [line["shard_id"] for line in lines] == [0] * 11 + [1] * 11
    for shard in range(2):
        members = archive_members(tarred.manifest.parent / f"audio_{shard}.tar")
        assert list(members) == [line["audio_filepath"] for line in lines if line["shard_id"] == shard]
        for name, data in members.items():
            (source,) = [path for path in sources if Path(path).name == name]
            assert data == Path(source).read_bytes()


def test_make_and_check_from_the_command_line(speech_corpus, tmp_path):
    tool = [sys.executable, str(REPO_ROOT / "scripts" / "make_tarred_dataset.py")]
    make = [*tool, str(speech_corpus["train"]), "--num-shards", "2", "--out-dir"]
    made = subprocess.run([*make, str(tmp_path)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    pattern = re.search(r"archives of 11 utterances: (\S+);", made.stdout).group(1)
    assert pattern == f"{tmp_path.resolve()}/audio_{{0..1}}.tar"
    check = [*tool, "--check", str(tmp_path / TARRED_MANIFEST), "--archives", pattern, "--batch-size", "2", "--world-size", "2"]
    checked = subprocess.run(check, capture_output=True, text=True)
    assert checked.returncode == 0 and "[11, 11] utterances = [5, 5] batches" in checked.stdout, checked.stderr
    shar = subprocess.run([*make, str(tmp_path / "shar"), "--shar"], capture_output=True, text=True)
    assert shar.returncode == 0 and "cuts: 2 shards" in shar.stdout and "recording: 2 shards" in shar.stdout, shar.stderr


def test_unequal_remainder_is_left_out_and_reported(speech_corpus, tmp_path):
    made = make_tarred_dataset([speech_corpus["train"]], tmp_path, num_shards=5, seed=0)
    assert (made.per_shard, made.left_out) == (4, 2)
    assert len(made.manifest.read_text().splitlines()) == 20
    assert "2 utterances left out" in made.summary()


def test_same_batch_gives_the_same_loss_through_manifest_and_tarred_loaders(speech_corpus, tarred):
    """NeMo's manifest loader and its tarred loader, same utterances in the same order, same seeds: identical
    batches (noise and speaker mixing included) and the same masked, streaming-aligned loss."""
    cfg = compose_config("model.train_ds.shuffle=false", corpus=speech_corpus)
    model = StreamingNESTModel(cfg.model)
    tarred_cfg = cfg.model.train_ds.copy()
    with open_dict(tarred_cfg):
        tarred_cfg.update(is_tarred=True, manifest_filepath=str(tarred.manifest), tarred_audio_filepaths=tarred.archives)
    tarred_loader = model._setup_dataloader_from_config(tarred_cfg)
    assert type(tarred_loader.dataset).__name__ == "TarredAudioNoiseDataset"

    def first_batch_and_loss(loader):
        seed_everything(0)
        batch = next(iter(loader))
        seed_everything(1)
        model.train()
        return batch, model.inference_pass(batch, 0, mode="train", apply_mask=True)["train_loss"].item()

    manifest_batch, manifest_loss = first_batch_and_loss(model._train_dl)
    tarred_batch, tarred_loss = first_batch_and_loss(tarred_loader)
    for key in ("audio", "audio_len", "noise", "noise_len", "noisy_audio", "noisy_audio_len"):
        assert torch.equal(getattr(manifest_batch, key), getattr(tarred_batch, key)), key
    assert manifest_batch.noise.abs().sum() > 0 and not torch.equal(manifest_batch.noisy_audio, manifest_batch.audio)
    assert manifest_loss > 0  # tokens were masked and scored
    assert abs(manifest_loss - tarred_loss) <= LOSS_TOLERANCE


def test_ddp_pretraining_from_tarred_data(speech_corpus, tarred, tmp_path):
    """One epoch on 2 CPU processes: each reads its own archive, 11 utterances = 5 batches of 2, as reported."""
    args = [
        "preset=tiny",
        *data_overrides(speech_corpus, batch_size=2),
        *tarred_overrides(tarred.manifest, tarred.archives),
        f"exp_manager.exp_dir={tmp_path / 'exp'}",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "trainer.max_epochs=1",
    ]
    result = run_pretrain(args, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "MEMBER: 1/2" in output and "MEMBER: 2/2" in output
    assert "22 utterances, 0.022 h in 2 archives; 2 processes read [11, 11] utterances = [5, 5] batches" in result.stdout
    # NeMo's own epoch length would be ceil(22 / 2 / 2) = 6; both processes ran out of their archive after 5.
    assert global_step(last_checkpoint(tmp_path / "exp")) == 5


def test_missing_member_stops_the_run_naming_archive_and_member(speech_corpus, tarred, tmp_path):
    manifest, archives = copy_tarred(tarred, tmp_path / "tarred")
    archive = tmp_path / "tarred" / "audio_1.tar"
    member = sorted(archive_members(archive))[3]
    rewrite_archive(archive, drop=member)
    args = ["preset=tiny", *data_overrides(speech_corpus), *tarred_overrides(manifest, archives)]
    result = run_pretrain([*args, f"exp_manager.exp_dir={tmp_path / 'exp'}", "trainer.accelerator=cpu"], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{archive}: member {member} is missing" in result.stderr
    assert re.search(rf"{re.escape(str(manifest))}:\d+ names it with shard_id 1", result.stderr)
    assert not (tmp_path / "exp").exists()


def test_nemo_alone_trains_on_fewer_utterances_than_it_counts(speech_corpus, tarred, tmp_path):
    """Why the check exists: NeMo's tarred reader skips a missing member without a word and still counts it."""
    manifest, archives = copy_tarred(tarred, tmp_path / "tarred")
    rewrite_archive(tmp_path / "tarred" / "audio_0.tar", drop=sorted(archive_members(tmp_path / "tarred" / "audio_0.tar"))[0])
    cfg = compose_config(*tarred_overrides(manifest, archives), "model.train_ds.drop_last=false", corpus=speech_corpus)
    loader = StreamingNESTModel(cfg.model)._train_dl
    assert len(loader.dataset) == 22
    assert sum(len(batch.audio_len) for batch in loader) == 21


def test_corrupt_member_is_named_with_its_archive(tarred, tmp_path):
    manifest, archives = copy_tarred(tarred, tmp_path / "tarred")
    archive = tmp_path / "tarred" / "audio_0.tar"
    member = sorted(archive_members(archive))[5]
    rewrite_archive(archive, corrupt=member)
    with pytest.raises(ManifestError, match=rf"{re.escape(str(archive))}: member {member}: unreadable audio"):
        check_tarred_dataset(manifest, archives, 16000)


def test_member_lasting_other_than_its_line_is_named(tarred, tmp_path):
    manifest, archives = copy_tarred(tarred, tmp_path / "tarred")
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    lines[4]["duration"] += 0.5
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    archive, member = tmp_path / "tarred" / "audio_0.tar", lines[4]["audio_filepath"]
    with pytest.raises(ManifestError, match=rf"{re.escape(str(archive))}: member {member} lasts [\d.]+ s but "
                                            rf"{re.escape(str(manifest))}:5 says [\d.]+ s; remake"):
        check_tarred_dataset(manifest, archives, 16000)


def test_archives_no_process_reads_are_refused(speech_corpus, tmp_path):
    made = make_tarred_dataset([speech_corpus["train"]], tmp_path, num_shards=3)
    with pytest.raises(ManifestError, match=r"1 of 3 archives \(7 utterances, e.g. .*audio_2.tar\) would never be read"):
        check_tarred_dataset(made.manifest, made.archives, 16000, world_size=2, batch_size=2, drop_last=True)
    replicated = check_tarred_dataset(
        made.manifest, made.archives, 16000, world_size=2, batch_size=2, drop_last=True, shard_strategy="replicate"
    )
    assert replicated.per_process == [21, 21]


def test_processes_with_unequal_batches_are_refused(tarred, tmp_path):
    """Two utterances fewer in one archive: 4 batches against 5 would hang DDP at the end of the epoch."""
    manifest, archives = copy_tarred(tarred, tmp_path / "tarred")
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(ManifestError, match=r"process 0: 11 utterances = 5 batches .* process 1: 9 utterances = 4 batches"):
        check_tarred_dataset(manifest, archives, 16000, world_size=2, batch_size=2, drop_last=True)
    assert check_tarred_dataset(manifest, archives, 16000, world_size=2, batch_size=2, balanced=False).unlisted_members == 2
