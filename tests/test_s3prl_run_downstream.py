"""s3prl's own, unmodified run_downstream.py with our upstream: train, evaluate (-e) and resume (-e, more steps)
on the `example` downstream, on CPU, in fresh interpreters, from a temporary s3prl-like folder.

Training runs `python run_downstream.py` in a venv set up like `make install` does it (`pip install -e`, then
`streaming-ssl-s3prl install-hook`); evaluation the same way (torch 2.8 weights-only loading of s3prl's
checkpoints); resuming goes through the `streaming-ssl-s3prl run-downstream` launcher, without the hook.
"""

from __future__ import annotations

import argparse
import sys

import pytest
import torch
import yaml

from tests.s3prl_support import child_env, install_project, make_s3prl_workdir, make_venv, run, save_tiny_checkpoint

pytestmark = pytest.mark.s3prl  # every test here runs s3prl (README Versions)

ENTRY = "streaming_wavlm_400ms"


def load_s3prl_checkpoint(path):
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu")


@pytest.fixture(scope="module")
def s3prl_venv(tmp_path_factory):
    """The s3prl-like folder and a venv set up as `make install` does. Returns (workdir, venv python, env)."""
    root = tmp_path_factory.mktemp("run_downstream")
    workdir = make_s3prl_workdir(root)
    python, _ = make_venv(root / "venv")
    install_project(python, root, editable=True)
    env = child_env(with_repo_on_path=False)
    run([python.parent / "streaming-ssl-s3prl", "install-hook"], env=env)
    return workdir, python, env


@pytest.fixture(scope="module")
def trained(s3prl_venv, tmp_path_factory):
    """Trains 2 steps (a checkpoint after each). Returns (workdir, venv python, env, experiment dir, stderr)."""
    workdir, python, env = s3prl_venv
    ckpt = save_tiny_checkpoint(tmp_path_factory.mktemp("wavlm") / "tiny.pt")
    result = run([python, "run_downstream.py", "-m", "train", "-u", ENTRY, "-k", ckpt, "-d", "example", "-n", "exp",
                  "--device", "cpu"], cwd=workdir, env=env)
    return workdir, python, env, workdir / "result" / "downstream" / "exp", result.stderr


def test_training_saves_s3prl_checkpoints(trained):
    _, _, _, expdir, stderr = trained
    assert "[Featurizer] - The selected feature hidden_states's downsample rate is 320" in stderr
    state = load_s3prl_checkpoint(expdir / "states-2.ckpt")
    assert state["Step"] == 2 and state["Args"].upstream == ENTRY
    assert {"Featurizer", "Downstream", "Optimizer"} <= set(state) and "Upstream" not in state  # upstream frozen
    assert state["Featurizer"]["weights"].shape == (2,)  # one weight per transformer layer
    assert (expdir / "states-1.ckpt").is_file()


def test_evaluate_from_a_checkpoint(trained):
    """s3prl's `torch.load(ckpt)` must read the pickled argparse.Namespace on torch 2.8 (weights-only default).
    Evaluated with another entry than trained with (same features, other chunk size), as STREAMING_WAVLM.md suggests."""
    workdir, python, env, expdir, _ = trained
    result = run([python, "run_downstream.py", "-m", "evaluate", "-e", expdir / "states-2.ckpt", "--device", "cpu",
                  "-o", "args.upstream=streaming_wavlm_1000ms"], cwd=workdir, env=env)
    saved_args = [yaml.safe_load(p.read_text()) for p in expdir.glob("args_*.yaml")]  # run_downstream.py's record
    assert [a["upstream"] for a in saved_args if a["mode"] == "evaluate"] == ["streaming_wavlm_1000ms"]
    assert f"[Runner] - Resume from {expdir / 'states-2.ckpt'}" in result.stdout
    assert "Loading Featurizer weights from the previous experiment" in result.stdout + result.stderr
    assert "test: " in result.stderr  # the evaluation loop ran (default split: test)


def test_resume_training_through_the_launcher(trained, tmp_path):
    workdir, _, _, expdir, _ = trained
    resumed = tmp_path / "resumed"
    result = run([sys.executable, "-m", "s3prl_upstream.cli", "run-downstream", "--", "-m", "train",
                  "-e", expdir / "states-1.ckpt", "-o", f"args.expdir={resumed},,config.runner.total_steps=3",
                  "--device", "cpu"], cwd=workdir, env=child_env(with_repo_on_path=True))
    assert "Loading Optimizer weights from the previous experiment" in result.stdout + result.stderr
    state = load_s3prl_checkpoint(resumed / "states-3.ckpt")
    assert state["Step"] == 3 and state["Args"].upstream == ENTRY
    assert sorted(p.name for p in resumed.glob("states-*.ckpt")) == ["states-2.ckpt", "states-3.ckpt"]  # from step 1 on


def test_streaming_nest_entry_trains_through_the_same_hook(s3prl_venv, tmp_path):
    """A streaming NEST .nemo (lookahead mode: 400 ms attention chunks) as the upstream of the same run."""
    from nemo_streaming_ssl.streaming.untrained import untrained_model
    from tests.streaming_helpers import MODES

    workdir, python, env = s3prl_venv
    torch.manual_seed(0)
    nemo = tmp_path / "ssl.nemo"
    untrained_model(MODES["lookahead"]).save_to(str(nemo))
    result = run([python, "run_downstream.py", "-m", "train", "-u", "streaming_nest_400ms", "-k", nemo, "-d", "example",
                  "-n", "nest", "--device", "cpu"], cwd=workdir, env={**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    # (1 thread: 2 threads spin on a busy 2-core machine; this run took 54 s with them, 10 s without)
    assert "[Featurizer] - The selected feature hidden_states's downsample rate is 1280" in result.stderr
    state = load_s3prl_checkpoint(workdir / "result" / "downstream" / "nest" / "states-2.ckpt")
    assert state["Step"] == 2 and state["Args"].upstream == "streaming_nest_400ms"
    assert state["Featurizer"]["weights"].shape == (3,)  # the first layer's input + 2 layer outputs
