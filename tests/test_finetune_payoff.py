"""The fine-tuning payoff benchmark (scripts/finetune_payoff.py): smallest setting end to end.

A smoke test: both arms ran comparably and every output is well formed; never that pretraining helps.
"""

import json
import math
from pathlib import Path

import pytest

from nemo_streaming_ssl.data.corpus import utterance_specs
from nemo_streaming_ssl.evaluation.payoff import PayoffSettings, run_payoff, save_random_init
from tests.script_loader import load_script
from tests.nest_support import REPO_ROOT

LABELED = dict(labeled_utterances=12, labeled_seed=1)  # voices of seed 1: 2 of the 12 are en-us+f2 / en-gb+m3


@pytest.fixture(scope="module")
def pretrained_nemo(tmp_path_factory) -> Path:
    """A tiny streaming NEST .nemo standing in for a pretrained one (other weights than the random arm's)."""
    from nemo_streaming_ssl.evaluation.benefit import ARMS, BenefitSettings, untrained

    path = tmp_path_factory.mktemp("nest") / "nest.nemo"
    untrained(ARMS["streaming"], BenefitSettings(out_dir="", data_dir=""), seed=100).save_to(str(path))
    return path


@pytest.fixture(scope="module")
def payoff(pretrained_nemo, tmp_path_factory):
    out = tmp_path_factory.mktemp("payoff")
    settings = PayoffSettings(
        out_dir=str(out / "run"),
        data_dir=str(out / "data"),
        nemo_files=(str(pretrained_nemo),),
        seeds=(3,),
        max_steps=3,
        batch_size=4,
        warmup_steps=1,
        val_every=2,
        progress=False,
        **LABELED,
    )
    return settings, run_payoff(settings, command="pytest")["results"]


def test_smallest_setting_writes_well_formed_results(payoff):
    settings, results = payoff
    out = Path(settings.out_dir)
    on_disk = json.loads((out / "results.json").read_text())
    assert list(on_disk) == ["benchmark", "command", "date", "machine", "settings", "results", "wall_s"]
    assert on_disk["results"]["table"] == results["table"] == (out / "table.txt").read_text().rstrip("\n")
    for key in ("data", "vocabulary", "runs", "summary", "stage_s"):
        assert key in on_disk["results"], key
    assert on_disk["benchmark"] == "finetune_payoff" and on_disk["command"] == "pytest" and on_disk["wall_s"] > 0
    assert (out / "finetune_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [(r["arm"], r["seed"]) for r in results["runs"]] == [("pretrained", 3), ("random", 3)]
    for run in results["runs"]:
        assert run["steps"] == 3 and len(run["train_losses"]) == 3
        assert all(math.isfinite(v) for v in run["train_losses"])
        assert [p["step"] for p in run["curve"]] == [0, 2, 3]  # before training, every 2 steps, the last step
        for point in run["curve"]:
            assert math.isfinite(point["val_loss"]) and point["val_loss"] > 0
            assert point["wer"] >= 0 and point["cer"] >= 0
        assert run["run_s"] > run["eval_s"] > 0
    for row in ("pretrained", "random", "paired_difference"):
        assert results["summary"][row]["runs"] == 1 and row in results["table"]
    assert "cer best" in results["table"] and "wer final" in results["table"]


def test_both_arms_share_vocabulary_seed_and_decoder_init(payoff):
    _, results = payoff
    pretrained, random = results["runs"]
    assert pretrained["vocabulary"] == random["vocabulary"] == results["vocabulary"] and len(results["vocabulary"]) > 10
    assert pretrained["decoder_init_sha1"] == random["decoder_init_sha1"]  # same fine-tuning seed, same CTC head
    assert pretrained["curve"][0] != random["curve"][0]  # but different encoders
    assert Path(random["init_nemo"]).name == "random_seed3.nemo"


def test_validation_voices_are_held_out(payoff):
    settings, results = payoff
    voice = {s.utt_id: s.voice for s in utterance_specs(settings.labeled_utterances, settings.labeled_seed)}
    voices = {
        split: {voice[Path(json.loads(line)["audio_filepath"]).stem] for line in Path(info["manifest"]).read_text().splitlines()}
        for split, info in results["data"].items()
    }
    assert voices["val"] == set(settings.val_voices) and not voices["train"] & voices["val"]
    assert results["data"]["train"]["utterances"] + results["data"]["val"]["utterances"] == 12


def test_random_init_must_match_the_pretrained_config(pretrained_nemo, tmp_path):
    settings = PayoffSettings(out_dir=str(tmp_path), data_dir=str(tmp_path), nemo_files=(), seeds=(), overrides=("model.encoder.n_layers=3",))
    with pytest.raises(ValueError, match=r"differs from .*\['encoder'\]"):
        save_random_init(settings, 0, str(pretrained_nemo), tmp_path / "random.nemo")
    assert not (tmp_path / "random.nemo").exists()


def test_command_line_pairs_one_seed_per_model(pretrained_nemo, tmp_path):
    script = load_script(REPO_ROOT / "scripts" / "finetune_payoff.py")
    s = script.parse_settings(["--out", str(tmp_path), "--nemo", str(pretrained_nemo), "--steps", "400", "--override", "model.masking.block_size=16"])
    assert s.seeds == (0,) and s.warmup_steps == 40 and s.overrides == ("model.masking.block_size=16",)
    assert s.data_dir == str(tmp_path / "data")
    with pytest.raises(SystemExit, match="one per --nemo"):
        script.parse_settings(["--out", str(tmp_path), "--nemo", str(pretrained_nemo), "--seeds", "0", "1"])
