"""Pretraining through Lhotse (use_lhotse): NeMo manifests and NeMo tarred data read by Lhotse give the manifest
loader's batches and loss, duration bucketing keeps each batch in one bucket, and the pretrain script runs it on
2-process CPU DDP."""

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from nemo_streaming_ssl.data.tarred import make_lhotse_shar, make_tarred_dataset
from nemo_streaming_ssl.models import StreamingNESTModel

from .tarred_support import exact_corpus  # noqa: F401 (fixture)
from .nest_support import compose_config, data_overrides, run_pretrain, tarred_overrides
from .test_nest_pretrain_script import global_step, last_checkpoint

LOSS_TOLERANCE = 1e-6  # same samples, same seeds, same CPU kernels (measured: identical)
LHOTSE = ("++model.train_ds.use_lhotse=true", "++model.train_ds.force_finite=true")  # finite: one pass, then stop


def first_batch_and_loss(model, loader):
    seed_everything(0)
    batch = next(iter(loader))
    seed_everything(1)
    model.train()
    return batch, model.inference_pass(batch, 0, mode="train", apply_mask=True)["train_loss"].item()


@pytest.mark.parametrize("source", ["manifest", "tarred", "shar"])
def test_same_batch_gives_the_same_loss_through_lhotse(exact_corpus, tmp_path, source):
    """Lhotse reading the NeMo manifest, the NeMo tarred archives or the Lhotse Shar made from it, against NeMo's
    manifest loader: identical batches (noise and speaker mixing included) and the same masked, streaming-aligned loss."""
    settings = ["model.train_ds.shuffle=false"]
    reference = StreamingNESTModel(compose_config(*settings, corpus=exact_corpus).model)
    if source == "tarred":
        tarred = make_tarred_dataset([exact_corpus["train"]], tmp_path, num_shards=2)
        settings += tarred_overrides(tarred.manifest, tarred.archives)  # Lhotse ignores is_tarred, finds the archives
    if source == "shar":
        # One shard: NeMo reads Shar shards in a random order even with shuffle=false (shuffle_shards=True).
        shards = make_lhotse_shar([exact_corpus["train"]], tmp_path, num_shards=1)
        assert [len(shards["cuts"]), len(shards["recording"])] == [1, 1]
        settings += ["model.train_ds.manifest_filepath=null", f"++model.train_ds.shar_path={tmp_path}"]
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, use_distributed_sampler=False)
    model = StreamingNESTModel(compose_config(*settings, *LHOTSE, corpus=exact_corpus).model, trainer=trainer)
    model.load_state_dict(reference.state_dict())
    expected = "ManifestParityLhotseAudioNoiseDataset" if source == "manifest" else "IterableDatasetWrapper"
    assert type(model._train_dl.dataset).__name__ == expected

    manifest_batch, manifest_loss = first_batch_and_loss(reference, reference._train_dl)
    lhotse_batch, lhotse_loss = first_batch_and_loss(model, model._train_dl)
    for key in ("audio", "audio_len", "noise", "noise_len", "noisy_audio", "noisy_audio_len"):
        assert torch.equal(getattr(manifest_batch, key), getattr(lhotse_batch, key)), key
    assert manifest_batch.noise.abs().sum() > 0 and manifest_loss > 0
    assert abs(manifest_loss - lhotse_loss) <= LOSS_TOLERANCE


def test_duration_bucketing_keeps_each_batch_in_one_bucket(speech_corpus):
    boundary = 3.5
    cfg = compose_config(
        *LHOTSE,
        "++model.train_ds.use_bucketing=true",
        "++model.train_ds.num_buckets=2",
        f"++model.train_ds.bucket_duration_bins=[{boundary}]",
        "model.train_ds.drop_last=false",
        "model.train_ds.batch_size=3",
        corpus=speech_corpus,
    )
    batches = [batch.audio_len / 16000 for batch in StreamingNESTModel(cfg.model)._train_dl]
    assert sum(len(seconds) for seconds in batches) == 22  # every utterance once, none dropped
    assert all(bool((seconds < boundary).all() or (seconds >= boundary).all()) for seconds in batches)
    assert {bool((seconds < boundary).all()) for seconds in batches} == {True, False}  # both buckets were used


def test_ddp_pretraining_through_lhotse_with_bucketing(speech_corpus, tmp_path):
    args = [
        "preset=tiny",
        *data_overrides(speech_corpus, batch_size=2),
        "++model.train_ds.use_lhotse=true",
        "++model.train_ds.use_bucketing=true",
        "++model.train_ds.num_buckets=2",
        f"exp_manager.exp_dir={tmp_path / 'exp'}",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "trainer.max_steps=4",
    ]
    result = run_pretrain(args, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "MEMBER: 1/2" in output and "MEMBER: 2/2" in output
    assert "Creating a Lhotse DynamicBucketingSampler" in output
    assert "train_ds: " in result.stdout and "22 utterances" in result.stdout  # the manifest was checked first
    assert global_step(last_checkpoint(tmp_path / "exp")) == 4
