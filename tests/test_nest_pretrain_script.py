"""The pretrain script as users run it: manifest errors stop it early, DDP on 2 CPU processes, 2 nodes, resume."""

import logging
import re
from pathlib import Path

import pytest
import torch

from nemo_streaming_ssl.models import StreamingNESTModel

from .multinode_support import checkpoint_steps, kill_nodes_when, launch_nodes, wait_nodes
from .nest_support import PRETRAIN_SCRIPT, data_overrides, run_pretrain

NEMO_LINE = re.compile(r"Pretrained model \(\.nemo\): (\S+)")


def last_checkpoint(exp_dir: Path) -> Path:
    (path,) = exp_dir.rglob("*-last.ckpt")
    return path


def global_step(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"]


def logged_train_steps(event_files) -> list[int]:
    """Steps at which train_loss was written to the given TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for path in event_files:
        events = EventAccumulator(str(path))
        events.Reload()
        if "train_loss" in events.Tags()["scalars"]:
            steps += [event.step for event in events.Scalars("train_loss")]
    return sorted(steps)


def test_bad_manifest_line_stops_before_training(speech_corpus, tmp_path):
    lines = Path(speech_corpus["train"]).read_text().splitlines()
    lines[2] = lines[2].replace(".wav", "_missing.wav")
    bad = tmp_path / "train_bad.json"
    bad.write_text("\n".join(lines) + "\n")
    corpus = dict(speech_corpus, train=bad)
    result = run_pretrain(["preset=tiny", *data_overrides(corpus), f"exp_manager.exp_dir={tmp_path / 'exp'}"], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{bad}:3" in result.stderr and "audio file not found" in result.stderr
    assert not (tmp_path / "exp").exists()  # neither exp_manager nor the trainer ran


@pytest.fixture(scope="module")
def ddp_run(speech_corpus, tmp_path_factory):
    """4 steps of DDP on 2 CPU processes (gloo), checkpoints under exp/; also the weights after those 4 steps,
    kept before test_rerun_resumes_from_the_last_checkpoint trains on in that folder."""
    work = tmp_path_factory.mktemp("ddp")
    args = [
        "preset=tiny",
        *data_overrides(speech_corpus, batch_size=2),
        f"exp_manager.exp_dir={work / 'exp'}",
        "trainer.accelerator=cpu",
        "trainer.log_every_n_steps=1",
    ]
    first = run_pretrain([*args, "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=4"], work)
    weights = [torch.load(path, map_location="cpu", weights_only=False)["state_dict"] for path in (work / "exp").rglob("*-last.ckpt")]
    return work, args, first, weights


@pytest.mark.multiprocess
def test_ddp_on_two_cpu_processes(ddp_run):
    work, _, result, _ = ddp_run
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "MEMBER: 1/2" in output and "MEMBER: 2/2" in output
    nemo_path = Path(NEMO_LINE.search(result.stdout).group(1))
    assert nemo_path.is_file() and nemo_path.is_relative_to(work)
    assert type(StreamingNESTModel.restore_from(str(nemo_path), map_location="cpu")) is StreamingNESTModel
    assert global_step(last_checkpoint(work / "exp")) == 4


def test_rerun_resumes_from_the_last_checkpoint(ddp_run):
    """A stopped run (here: one that reached max_steps=4) continues from its checkpoint when rerun."""
    work, args, first, _ = ddp_run
    assert first.returncode == 0
    checkpoint = last_checkpoint(work / "exp")
    before = set((work / "exp").rglob("events.out.tfevents*"))
    result = run_pretrain([*args, "trainer.devices=1", "trainer.max_steps=7"], work)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert f"Restoring states from the checkpoint path at {checkpoint}" in output
    assert global_step(last_checkpoint(work / "exp")) == 7
    assert logged_train_steps(set((work / "exp").rglob("events.out.tfevents*")) - before) == [4, 5, 6]  # not 0..6


@pytest.fixture(scope="module")
def two_nodes(ddp_run):
    """ddp_run's settings on 2 nodes x 1 process (torchrun), to 12 steps with a checkpoint every 4 global steps
    (STREAMING_NEST.md: not every 4 batches of each epoch, after which NeMo skips the final checkpoint); both nodes
    are killed once the step-4 checkpoint is written, then the same two commands are run again."""
    work, args, _, _ = ddp_run
    run_dir = work / "exp" / "two_nodes"
    node_args = [*args, "name=two_nodes", "trainer.devices=1", "trainer.num_nodes=2", "trainer.strategy=ddp",
                 "trainer.max_steps=12", "trainer.val_check_interval=4", "trainer.check_val_every_n_epoch=null",
                 "trainer.max_epochs=null"]

    def step_4_saved() -> bool:
        steps = checkpoint_steps(run_dir)
        return bool(steps) and [s for name, s in steps.items() if name.endswith("-last.ckpt")] == [4]

    killed = launch_nodes(PRETRAIN_SCRIPT, node_args, work / "first")
    kill_nodes_when(killed, work / "first", step_4_saved)
    (checkpoint,) = run_dir.rglob("*-last.ckpt")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    after_kill = {
        "checkpoint": checkpoint,  # the rerun replaces it (its name holds the validation loss)
        "step": state["global_step"],
        "weights": state["state_dict"],
        "files": {path.relative_to(run_dir) for path in run_dir.rglob("*") if path.is_file()},
        "events": set(run_dir.rglob("events.out.tfevents*")),
        "logs": [(work / "first" / f"node{node}.log").read_text() for node in range(2)],
    }
    rerun = wait_nodes(launch_nodes(PRETRAIN_SCRIPT, node_args, work / "rerun"), work / "rerun")
    return {"run_dir": run_dir, "after_kill": after_kill, "rerun": rerun}


@pytest.mark.multiprocess
def test_two_nodes_are_ranks_0_and_1_of_one_world(two_nodes):
    node0, node1 = two_nodes["after_kill"]["logs"]
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in node0 and "GLOBAL_RANK: 1, MEMBER: 2/2" in node1
    # TensorBoard is written by global rank 0 only, and no .nemo before the end
    assert len(two_nodes["after_kill"]["events"]) == 1
    assert not [path for path in two_nodes["after_kill"]["files"] if path.suffix == ".nemo"]


@pytest.mark.multiprocess
def test_two_nodes_train_as_one_node_of_two_devices(two_nodes, ddp_run):
    """Same seed, same shards (batch_size x devices x num_nodes = 2 x 1 x 2 here, 2 x 2 x 1 there), same sums
    over the 2 ranks: the weights after 4 steps are bitwise those of the 1 node x 2 devices run."""
    (one_node,) = ddp_run[3]
    assert two_nodes["after_kill"]["step"] == 4
    weights = two_nodes["after_kill"]["weights"]
    assert weights.keys() == one_node.keys()
    for name, value in weights.items():
        torch.testing.assert_close(value, one_node[name], rtol=0, atol=0, msg=name)


@pytest.mark.multiprocess
def test_two_nodes_resume_after_a_kill(two_nodes):
    """The same two commands after the kill: they restore step 4 and train on to 12, node 0 writes the .nemo. Both
    nodes end (wait_nodes checks their exit codes) only if both resumed: a node that started over would run 4 steps
    more than the other, and their collective calls would not match."""
    run_dir, checkpoint = two_nodes["run_dir"], two_nodes["after_kill"]["checkpoint"]
    node0, node1 = two_nodes["rerun"]
    assert f"Restoring states from the checkpoint path at {checkpoint}" in node0
    assert global_step(last_checkpoint(run_dir)) == 12
    new_events = set(run_dir.rglob("events.out.tfevents*")) - two_nodes["after_kill"]["events"]
    # 8 steps (5..12), not 12 from scratch. Lightning numbers its log by batches stepped, which a checkpoint written
    # during validation stores before counting that step's batch: the resumed run logs them at 3..10.
    assert len(new_events) == 1 and logged_train_steps(new_events) == list(range(3, 11))
    nemo_path = Path(NEMO_LINE.search(node0).group(1))
    assert nemo_path == (run_dir / "checkpoints" / "two_nodes.nemo").resolve() and nemo_path.is_file()
    assert not NEMO_LINE.search(node1)


def test_output_is_one_step_bar_with_losses_and_folded_config_dumps(ddp_run):
    """The console of a run: one bar over global steps (3 of 3) showing the train and validation loss, no bar per
    epoch or validation, NeMo's config dumps folded to a line each."""
    work, args, _, _ = ddp_run
    settings = ["name=console", "trainer.devices=1", "trainer.max_steps=3", "trainer.val_check_interval=2"]
    run = run_pretrain([*args, *settings], work)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    lines = output.replace("\r", "\n").splitlines()
    bar = [line for line in lines if line.startswith("step:")]
    assert bar and "3/3 [" in bar[-1] and "loss=" in bar[-1] and "val_loss=" in bar[-1]
    assert not any(line.startswith(("Epoch ", "Validation")) and "it/s" in line for line in lines)
    assert "more lines hidden: verbose=true shows them" in output and "bucketing_strategy" not in output


def test_config_dumps_fold_unless_verbose():
    """NeMo's logger: a multi-line record (a config dump) becomes its first line, a very long line (a dict dump)
    its first 100 characters; verbose keeps both whole."""
    from nemo.utils import logging as nemo_logging

    from nemo_streaming_ssl.console import NEMO_LOGGER, fold_nemo_config_dumps

    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger(NEMO_LOGGER).addHandler(handler)
    dump = "Train config:\n" + "\n".join(f"  key_{i}: {i}" for i in range(70))
    schema = str({f"key_{i}": i for i in range(100)})  # one line of 1290 characters
    try:
        fold_nemo_config_dumps(verbose=False)
        nemo_logging.warning(dump)
        nemo_logging.info(schema)
        fold_nemo_config_dumps(verbose=True)
        nemo_logging.warning(dump)
        nemo_logging.info(schema)
    finally:
        logging.getLogger(NEMO_LOGGER).removeHandler(handler)
        fold_nemo_config_dumps(verbose=True)
    assert records == ["Train config: [70 more lines hidden: verbose=true shows them]",
                       f"{schema[:100]} [{len(schema) - 100} more characters hidden: verbose=true shows them]",
                       dump, schema]
