"""The SSL-benefit benchmark (scripts/ssl_benefit.py): smallest setting end to end, and its parts.

A smoke test: it checks that every output exists and is well formed, never that pretraining helps.
"""

import json
import math

import numpy as np
import pytest
import torch

from nemo_streaming_ssl.evaluation import KeywordTaskError, build_keyword_task, layer_features, probe_accuracy, read_clips
from nemo_streaming_ssl.evaluation.benefit import ARMS, BenefitSettings, run_benchmark
from nemo_streaming_ssl.streaming.untrained import untrained_model
from tests.script_loader import load_script
from tests.nest_support import REPO_ROOT

TINY_TASK = dict(keywords=("bat", "cat", "pit"), accents=("en-us",), train_variants=("m1", "f1"), test_variants=("m6",))


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    out = tmp_path_factory.mktemp("benefit")
    settings = BenefitSettings(
        out_dir=str(out / "run"),
        data_dir=str(out / "data"),
        max_steps=2,
        batch_size=2,
        corpus_utterances=8,
        corpus_noise=2,
        progress=False,
        **TINY_TASK,
    )
    return settings, run_benchmark(settings, command="pytest")["results"]


def test_smallest_setting_writes_well_formed_results(benchmark):
    settings, results = benchmark
    out = settings.out_dir
    on_disk = json.loads(open(f"{out}/results.json").read())
    assert on_disk["results"]["table"] == results["table"] == open(f"{out}/table.txt").read().rstrip("\n")
    assert list(on_disk) == ["benchmark", "command", "date", "machine", "settings", "results", "wall_s"]
    assert on_disk["benchmark"] == "ssl_benefit" and on_disk["command"] == "pytest" and on_disk["wall_s"] > 0
    for key in ("task", "runs", "summary", "stage_s"):
        assert key in results, key
    with open(f"{out}/probe_accuracy.png", "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    assert [r["arm"] for r in results["runs"]] == list(ARMS)
    layers = 1 + 2  # pre-encode output + the tiny preset's 2 Conformer layers
    for run in results["runs"]:
        assert len(run["layer_accuracy"]) == layers
        assert all(0.0 <= a <= 1.0 for a in run["layer_accuracy"])
        assert run["targets"]["classes_used"] >= 1 and run["targets"]["unigram_entropy_nats"] >= 0.0
        if not ARMS[run["arm"]].pretrain:
            assert "pretraining" not in run
        else:
            record = run["pretraining"]
            assert record["steps"] == 2 and all(math.isfinite(v) for v in record["train_losses"])
            assert math.isfinite(record["val_loss_after"]) and open(record["nemo"], "rb").read(2)
    for arm, row in results["summary"].items():
        assert row["runs"] == 1 and 0.0 <= row["best_layer"]["mean"] <= 1.0 and arm in results["table"]
    task = results["task"]
    assert task["num_keywords"] == 3 and task["chance"] == pytest.approx(1 / 3)
    assert not set(task["train_speakers"]) & set(task["test_speakers"])
    assert task["train_clips"] == 6 and task["test_clips"] == 3


def test_given_nemo_skips_pretraining(benchmark, tmp_path):
    settings, results = benchmark
    nemo = next(r["pretraining"]["nemo"] for r in results["runs"] if r["arm"] == "streaming")
    again = BenefitSettings(
        out_dir=str(tmp_path),
        data_dir=settings.data_dir,
        arms=("streaming",),
        nemo_files={"streaming": [nemo]},
        corpus_utterances=settings.corpus_utterances,
        corpus_noise=settings.corpus_noise,
        progress=False,
        **TINY_TASK,
    )
    rerun = run_benchmark(again)["results"]["runs"]
    assert len(rerun) == 1 and rerun[0]["nemo"] == nemo and rerun[0]["pretrain_s"] < 60
    assert rerun[0]["pretraining"]["nemo"] == nemo  # the record written beside the .nemo
    first = next(r for r in results["runs"] if r["arm"] == "streaming")
    assert rerun[0]["layer_accuracy"] == first["layer_accuracy"]  # same model, same data, deterministic probe


def test_keyword_clips_have_labels_and_disjoint_speakers(benchmark):
    settings, results = benchmark
    clips = {split: read_clips(path) for split, path in _task_manifests(settings).items()}
    assert {c.keyword for c in clips["train"]} == set(TINY_TASK["keywords"])
    assert all(TINY_TASK["keywords"][c.label] == c.keyword for c in clips["train"] + clips["test"])
    assert {c.variant for c in clips["test"]} == {"m6"} and {c.variant for c in clips["train"]} == {"m1", "f1"}


def _task_manifests(settings):
    from pathlib import Path

    stamps = [json.loads(p.read_text()) for p in Path(settings.data_dir).glob("keywords_*/made.json")]
    assert len(stamps) == 1
    return stamps[0]["manifests"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(train_variants=("m1", "m6"), test_variants=("m6",)), "share ['m6']"),
        (dict(keywords=("bat", "river")), "river"),
        (dict(train_variants=("m1",), test_variants=("m3",)), "pretraining corpus"),
    ],
)
def test_keyword_task_refuses_leaks(tmp_path, kwargs, message):
    with pytest.raises(KeywordTaskError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_keyword_task(tmp_path, progress=False, **kwargs)
    assert not list(tmp_path.rglob("*.wav"))  # refused before speaking anything


def test_probe_separates_separable_classes_and_not_random_labels():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 20)) * 3
    labels = rng.integers(0, 4, size=400)
    x = centres[labels] + rng.normal(size=(400, 20))
    assert probe_accuracy(x[:300], labels[:300], x[300:], labels[300:]) > 0.95
    shuffled = rng.permutation(labels)
    assert probe_accuracy(x[:300], shuffled[:300], x[300:], shuffled[300:]) < 0.45  # chance 0.25


def test_layer_features_do_not_depend_on_the_batch():
    """Pooling only sees each clip's own frames: a clip alone gives the features it gets in a padded batch."""
    torch.manual_seed(0)
    model = untrained_model(["preset=tiny"])
    rng = np.random.default_rng(0)
    clips = [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (8000, 11000, 5300)]
    together = layer_features(model, clips, batch_size=3)
    assert together.shape == (3, 3, 2 * 64)  # (layers, clips, mean+std of d_model)
    for i, clip in enumerate(clips):
        alone = layer_features(model, [clip], batch_size=1)
        assert np.allclose(alone[:, 0], together[:, i], atol=1e-4)


def test_command_line_keeps_seeds_and_overrides_apart(tmp_path):
    script = load_script(REPO_ROOT / "scripts" / "ssl_benefit.py")
    s = script.parse_settings(
        ["--out-dir", str(tmp_path), "--seeds", "0", "1", "--override", "model.optim.lr=2.0", "model.masking.block_size=16"]
    )
    assert s.seeds == (0, 1) and s.overrides == ("model.optim.lr=2.0", "model.masking.block_size=16")
    assert s.data_dir == str(tmp_path / "data") and s.arms == tuple(ARMS)
    with pytest.raises(SystemExit, match="ARM=PATH"):
        script.parse_settings(["--out-dir", str(tmp_path), "--nemo", "teacher=x.nemo"])
