"""The distillation recipe end to end on tiny teachers and espeak-ng speech: stages, checkpoints, resume, errors,
2 nodes."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nemo_streaming_ssl.config import compose_config
from nemo_streaming_ssl.data.manifest import ManifestError
from nemo_streaming_ssl.data.tarred import make_tarred_dataset
from nemo_streaming_ssl.run_record import RerunError
from s3prl_upstream.distillation.recipe import RecipeError, build, run_distillation
from s3prl_upstream.distillation.student import StudentInitError
from s3prl_upstream.distillation.teacher import StreamingWavLMTeacher, TeacherError, load_teacher
from s3prl_upstream.wavlm import load_streaming_wavlm
from s3prl_upstream.wavlm.checkpoint import TRUST_PICKLE_ENV
from s3prl_upstream.distillation.demo_teacher import LARGE_STYLE, write_s3prl_wavlm
from tests.distillation_support import teachers  # noqa: F401 (fixture)
from tests.tarred_support import (  # noqa: F401 (fixtures)
    archive_members, copy_tarred, exact_corpus, rewrite_archive, shar, tarred,
)
from tests.multinode_support import checkpoint_steps, kill_nodes_when, launch_nodes, wait_nodes
from tests.script_loader import load_script
from tests.wavlm_helpers import TrainingNote

pytestmark = pytest.mark.s3prl  # every test here runs s3prl (README Versions)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "wavlm_distillation" / "distill_streaming_wavlm.py"
TINY_RUN = [
    "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true", "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false", "checkpoint.every_n_steps=2", "data.crop_seconds=1.0",
    "data.val_crop_seconds=1.0", "data.batch_size=2", "data.val_batch_size=2", "data.num_workers=0",
    "stages.positional_conv.steps=2", "stages.encoder.steps=2",
]


def config(teacher: Path, corpus: dict, exp_dir: Path, *overrides: str):
    """The shipped Hydra config with the tiny-run overrides, composed by Hydra itself."""
    return compose_config(
        "streaming_wavlm_distill",
        [
            f"teacher.checkpoint={teacher}", "teacher.layers=[1,2,3]", f"data.train_manifest={corpus['train']}",
            f"data.val_manifest={corpus['val']}", f"exp_dir={exp_dir}", *TINY_RUN, *overrides,
        ],
    )


def run_script(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(SCRIPT), *overrides], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def logged_steps(event_file: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(event_file))
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


@pytest.fixture(scope="module")
def trained(teachers, speech_corpus, tmp_path_factory):
    """The real entry script runs 2 + 2 steps; then the recipe resumes from last.ckpt to 2 + 4 steps."""
    exp_dir = tmp_path_factory.mktemp("distill")
    first = run_script(
        f"teacher.checkpoint={teachers['large']}", "teacher.layers=[1,2,3]",
        f"data.train_manifest={speech_corpus['train']}", f"data.val_manifest={speech_corpus['val']}",
        f"exp_dir={exp_dir}", *TINY_RUN,
    )
    first_ckpt = torch.load(exp_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    events_before = set((exp_dir / "tensorboard").glob("events.out.tfevents.*"))
    resumed = run_distillation(
        config(teachers["large"], speech_corpus, exp_dir, "stages.encoder.steps=4", "resume_from=auto")
    )
    new_events = set((exp_dir / "tensorboard").glob("events.out.tfevents.*")) - events_before
    return {"exp_dir": exp_dir, "first": first, "first_ckpt": first_ckpt, "resumed": resumed, "resumed_events": new_events}


def test_checkpoints_load_in_the_upstream_loader_without_a_config(trained, teachers):
    checkpoints = trained["exp_dir"] / "checkpoints"
    best = sorted(checkpoints.glob("best-step*.ckpt"))
    assert (checkpoints / "last.ckpt").is_file() and len(best) == 1
    slim = checkpoints / "student_last.pt"
    assert set(torch.load(slim, weights_only=True)) == {"student_state_dict", "model_config", "distillation"}
    assert (checkpoints / "student_best.pt").is_file()
    for path in (checkpoints / "last.ckpt", best[0], slim):
        model = load_streaming_wavlm(path)  # no model config: the checkpoint carries it
        assert model.config.causal and model.config.num_layers == 3 and model.config.dim == 32
        assert (model.config.window_size, model.config.lookahead_size) == (512, 3)
        hidden, frames = model(torch.randn(1, 16000))
        assert len(hidden) == 3 and all(h.shape == (1, 50, 32) for h in hidden) and frames.tolist() == [50]
    ckpt = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["distillation"] == {"teacher_checkpoint": str(teachers["large"].resolve()), "teacher_layers": [1, 2, 3]}
    # training moved the student away from its teacher initialisation
    teacher, teacher_ckpt = load_teacher(teachers["large"], [1, 2, 3])
    from s3prl_upstream.distillation.student import build_student

    initial, _ = build_student(teacher, teacher_ckpt, "teacher", {})
    trained_sd = ckpt["student_state_dict"]
    assert not torch.equal(trained_sd["encoder.layers.0.feed_forward.in_proj.weight"],
                           initial.state_dict()["encoder.layers.0.feed_forward.in_proj.weight"])
    # frozen in both stages: the relative embedding is still the teacher's
    torch.testing.assert_close(trained_sd["encoder.relative_embedding.weight"],
                               initial.state_dict()["encoder.relative_embedding.weight"], rtol=0, atol=0)


def test_resume_continues_the_global_step(trained):
    assert "step 4: last checkpoint" in trained["first"].stdout
    assert f"student (best, for -k): {trained['exp_dir'] / 'checkpoints' / 'student_best.pt'}" in trained["first"].stdout
    assert trained["first_ckpt"]["global_step"] == 4
    assert trained["resumed"].global_step == 6
    resumed = torch.load(trained["resumed"].last_checkpoint, map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 6
    assert not torch.equal(  # and it trained on from the stored weights
        resumed["student_state_dict"]["encoder.layers.2.attention.qkv_proj.weight"],
        trained["first_ckpt"]["student_state_dict"]["encoder.layers.2.attention.qkv_proj.weight"],
    )
    # the resumed run trained 2 steps, not 6 from scratch: its log holds 2 training steps, after the first run's
    (event_file,) = trained["resumed_events"]
    steps = logged_steps(event_file, "train/loss")
    assert len(steps) == 2 and min(steps) >= 4, steps


def test_rerun_of_another_config_or_a_fresh_run_keeps_the_earlier_checkpoints(trained, teachers, speech_corpus):
    """Into a folder with checkpoints: resuming with another student, or starting afresh, is refused before
    anything is built; the earlier checkpoints stay as they were."""
    exp_dir = trained["exp_dir"]
    kept = {path: path.read_bytes() for path in (exp_dir / "checkpoints").iterdir()}
    with pytest.raises(RerunError, match=r"(?s)student.model.lookahead_size: 3 -> 1.*exp_dir=\.\.\. or name="):
        run_distillation(config(teachers["large"], speech_corpus, exp_dir, "stages.encoder.steps=6",
                                "resume_from=auto", "student.model.lookahead_size=1"))
    with pytest.raises(RecipeError, match=r"holds the checkpoints of an earlier run.*resume_from=auto"):
        run_distillation(config(teachers["large"], speech_corpus, exp_dir))
    assert {path: path.read_bytes() for path in (exp_dir / "checkpoints").iterdir()} == kept


def test_run_shorter_than_the_validation_interval_still_writes_its_best_student(teachers, speech_corpus, tmp_path):
    """The documented smoke run (2 + 2 steps, the config's val_check_interval 1000): one validation at the end,
    so best-*.ckpt and student_best.pt exist and load."""
    result = run_distillation(
        config(teachers["large"], speech_corpus, tmp_path / "exp", "trainer.val_check_interval=1000"))
    assert result.global_step == 4 and result.best_checkpoint is not None
    assert set(result.students) == {"last", "best"} and all(path.is_file() for path in result.students.values())
    assert load_streaming_wavlm(result.students["best"]).config.num_layers == 3


def test_tensorboard_logs_losses_and_learning_rates(trained):
    event_files = sorted((trained["exp_dir"] / "tensorboard").glob("events.out.tfevents.*"))
    first = [f for f in event_files if f not in trained["resumed_events"]][0]
    assert logged_steps(first, "train/loss") == [0, 1, 2, 3]
    assert logged_steps(first, "val/layer_mse") == [1, 3]  # validation every 2 steps


@pytest.mark.parametrize("stage", ["positional_conv", "encoder"])
def test_each_stage_lowers_its_loss_on_a_fixed_batch(stage, teachers, speech_corpus, tmp_path):
    """A few optimizer steps of one stage, on one fixed batch (lr raised so a few steps show the trend)."""
    cfg = config(teachers["large"], speech_corpus, tmp_path, f"stages.{stage}.lr=2e-3", "data.crop_seconds=0.5")
    data, module = build(cfg)
    batch = next(iter(data.train_dataloader()))
    index = [s.name for s in module.schedule.stages].index(stage)
    stage_cfg = module.schedule.stages[index]
    groups = module.schedule.param_groups(module.student)
    for group in groups:
        group["lr"] = stage_cfg.lr if index in group["trained_in"] else 0.0
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.98), weight_decay=0.01)
    before = {k: v.clone() for k, v in module.student.state_dict().items()}
    losses = []
    for _ in range(5):
        out = module.distill(batch)
        loss = stage_cfg.positional_loss * out["positional_mse"] + stage_cfg.layer_loss * out["layer_mse"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    changed = {k.split(".")[0] + "." + k.split(".")[1] for k, v in module.student.state_dict().items() if not torch.equal(v, before[k])}
    if stage == "positional_conv":
        assert changed == {"encoder.positional_embedding"}
    else:
        assert "encoder.layers" in changed and "encoder.positional_embedding" not in changed
        assert "encoder.relative_embedding" not in changed


def tarred_training(manifest, archives) -> list[str]:
    """Overrides training from NeMo tarred audio; the brace pattern is quoted for Hydra's parser."""
    return [f"data.train_manifest={manifest}", f"data.train_tarred_audio_filepaths='{archives}'"]


def test_tarred_training_data_gives_the_same_run_as_its_plain_manifest(teachers, speech_corpus, tarred, tmp_path):
    """The archives made from the training manifest, same seed: the same first batches and the same first loss
    bitwise, and after 2 + 2 steps bitwise the same student."""
    plain, module = build(config(teachers["large"], speech_corpus, tmp_path / "plain"))
    from_tarred, _ = build(config(teachers["large"], speech_corpus, tmp_path / "tarred",
                                  *tarred_training(tarred.manifest, tarred.archives)))
    plain_batches, tarred_batches = iter(plain.train_dataloader()), iter(from_tarred.train_dataloader())
    for _ in range(4):
        a, b = next(plain_batches), next(tarred_batches)
        assert torch.equal(a["wav"], b["wav"])
    with torch.no_grad():
        losses = [module.distill(batch)["layer_mse"] for batch in (a, b)]
    assert losses[0] > 0 and torch.equal(*losses)
    students = [
        torch.load(run_distillation(config(teachers["large"], speech_corpus, tmp_path / name, *overrides)).last_checkpoint,
                   map_location="cpu", weights_only=True)["student_state_dict"]
        for name, overrides in (("plain_run", []), ("tarred_run", tarred_training(tarred.manifest, tarred.archives)))
    ]
    for name, value in students[1].items():
        torch.testing.assert_close(value, students[0][name], rtol=0, atol=0, msg=name)


def test_frame_alignment_front_ends_agree_from_frame_2(teachers, tmp_path):
    """With the teacher's conv weights, the causal student's front end equals the padded teacher's exactly
    wherever the student's 400-sample window lies inside the audio (frame t >= 2)."""
    plain = write_s3prl_wavlm(tmp_path / "plain.pt", dict(LARGE_STYLE, normalize=False), seed=2)
    teacher, teacher_ckpt = load_teacher(plain, [1, 2, 3])
    from s3prl_upstream.distillation.student import build_student

    student, _ = build_student(teacher, teacher_ckpt, "teacher", {})
    captured = {}
    student.feature_proj.register_forward_hook(lambda _m, _i, out: captured.__setitem__("student", out))
    teacher.model.post_extract_proj.register_forward_hook(lambda _m, _i, out: captured.__setitem__("teacher", out))
    for num_samples in (4000, 4321, 6719):
        wav = torch.randn(1, num_samples)
        with torch.no_grad():
            student(wav)
            teacher(wav)
        frames = math.ceil(num_samples / 320)
        assert captured["student"].shape[1] == captured["teacher"].shape[1] == frames
        torch.testing.assert_close(captured["student"][:, 2:], captured["teacher"][:, 2:], rtol=1e-4, atol=1e-4)
        assert (captured["student"][:, 0] - captured["teacher"][:, 0]).abs().max() > 1e-2  # frame 0 sees padding


def test_own_streaming_checkpoint_as_offline_teacher(trained):
    """A distilled checkpoint can teach again: run offline (causal=False) on the same frame grid."""
    teacher, ckpt = load_teacher(trained["exp_dir"] / "checkpoints" / "last.ckpt", [1, 3])
    assert isinstance(teacher, StreamingWavLMTeacher) and not teacher.model.config.causal
    wav = torch.randn(1, 5000)
    out = teacher(wav)
    assert out.positional.shape == (1, 16, 32) and [h.shape[1] for h in out.layers] == [16, 16]
    offline, _ = teacher.model(torch.nn.functional.pad(wav, (399, 0)))
    torch.testing.assert_close(out.layers[1], offline[2])


def test_bad_inputs_fail_before_training(teachers, speech_corpus, tarred, tmp_path):
    def fails(error, match, teacher=teachers["large"], *overrides):
        exp_dir = tmp_path / f"exp{len(list(tmp_path.iterdir()))}"
        with pytest.raises(error, match=match):
            run_distillation(config(teacher, speech_corpus, exp_dir, *overrides))
        assert not exp_dir.exists()  # nothing was trained or written

    unknown = tmp_path / "unknown.pt"
    torch.save({"weights": {"w": torch.zeros(2)}}, unknown)
    fails(TeacherError, r"unknown layout", unknown)
    fails(StudentInitError, r"feed_forward.in_proj.weight: teacher \(64, 32\) vs student \(48, 32\)",
          teachers["large"], "+student.model.ffn_dim=48")
    fails(StudentInitError, r"student.model.dim=48 but the teacher's hidden size is 32", teachers["large"],
          "+student.model.dim=48", "+student.model.num_heads=4", "+student.model.conv_pos_groups=4")
    fails(StudentInitError, r"Base/Base\+.*student.init=random", teachers["base"])
    empty = tmp_path / "empty.json"
    empty.write_text("")
    fails(ManifestError, r"empty manifest", teachers["large"], f"data.train_manifest={empty}")
    manifest, archives = copy_tarred(tarred, tmp_path / "tarred")
    member = sorted(archive_members(tmp_path / "tarred" / "audio_0.tar"))[0]
    rewrite_archive(tmp_path / "tarred" / "audio_0.tar", drop=member)
    fails(ManifestError, rf"audio_0.tar: member {member} is missing", teachers["large"],
          *tarred_training(manifest, archives))
    fails(RecipeError, r"trainer.max_steps is set by the recipe", teachers["large"], "+trainer.max_steps=10")
    fails(RecipeError, r"teacher.weights_only is gone.*teacher.trust_pickle=true", teachers["large"],
          "+teacher.weights_only=false")


def test_pickled_teacher_loads_only_with_teacher_trust_pickle(teachers, speech_corpus, tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_PICKLE_ENV, raising=False)
    legacy = tmp_path / "legacy_teacher.pt"
    torch.save({**torch.load(teachers["large"], weights_only=True), "note": TrainingNote("old trainer")}, legacy)
    refusal = r"\(given as teacher.checkpoint\) contains pickled.*teacher.trust_pickle=true"
    with pytest.raises(TeacherError, match=refusal):
        build(config(legacy, speech_corpus, tmp_path / "refused"))
    _, module = build(config(legacy, speech_corpus, tmp_path / "trusted", "teacher.trust_pickle=true"))
    assert module.teacher.layers == [1, 2, 3]


def test_base_teacher_trains_a_randomly_initialised_student_when_asked(teachers, speech_corpus, tmp_path):
    cfg = config(teachers["base"], speech_corpus, tmp_path, "student.init=random")
    data, module = build(cfg)
    assert module.student.config.dim == 32 and module.student.config.num_layers == 3
    out = module.distill(next(iter(data.train_dataloader())))
    assert torch.isfinite(out["layer_mse"]) and out["layer_mses"].shape == (3,)


def test_fidelity_report_per_chunk_size(trained, speech_corpus, tmp_path, capsys):
    import json

    from nemo_streaming_ssl.data.manifest import read_manifest
    from s3prl_upstream.distillation.losses import layer_cosines

    report_script = load_script(ROOT / "scripts" / "wavlm_fidelity_report.py")
    student_ckpt = trained["exp_dir"] / "checkpoints" / "last.ckpt"
    out_dir = tmp_path / "report"
    assert report_script.main([
        "--student", str(student_ckpt), "--manifest", str(speech_corpus["val"]), "--chunk-ms", "400", "1000",
        "--max-utterances", "2", "--max-seconds", "1.5", "--out-dir", str(out_dir), "--device", "cpu",
    ]) == 0
    printed = capsys.readouterr().out
    assert "400 ms cos" in printed and "1000 ms mse" in printed and "3 (T3)" in printed
    assert (out_dir / "fidelity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    numbers = json.loads((out_dir / "fidelity.json").read_text())
    assert numbers["num_utterances"] == 2 and numbers["teacher_layers"] == [1, 2, 3]
    for ms in ("400", "1000"):
        assert numbers["chunks"][ms]["max_abs_diff_vs_one_shot"] < 1e-4  # streaming is exact at any chunk size
    # the streamed numbers are the one-shot student's cosine to the teacher, frame-weighted over the utterances
    student = load_streaming_wavlm(student_ckpt)
    teacher, _ = load_teacher(trained["first_ckpt"]["distillation"]["teacher_checkpoint"], [1, 2, 3])
    import soundfile as sf

    weighted, frames = torch.zeros(3, dtype=torch.float64), 0
    with torch.no_grad():
        for entry in read_manifest(speech_corpus["val"])[:2]:
            wav = torch.from_numpy(sf.read(entry.audio_filepath, frames=24000, dtype="float32")[0])[None]
            hidden, _ = student(wav)
            num = hidden[0].shape[1]
            weighted += layer_cosines(hidden, teacher(wav).layers).double() * num
            frames += num
    expected = (weighted / frames).tolist()
    assert numbers["chunks"]["400"]["cosine"] == pytest.approx(expected, abs=1e-4)
    assert numbers["chunks"]["1000"]["cosine"] == pytest.approx(expected, abs=1e-4)


@pytest.fixture(scope="module")
def ddp_command(teachers, exact_corpus) -> list[str]:
    """10 steps (2 + 8) of DDP, last.ckpt every 4, resumable (resume_from=auto). The training manifest's durations
    are the files' exact ones, as in Lhotse Shar made from it, so that both give the same crop plan."""
    return [
        f"teacher.checkpoint={teachers['large']}", "teacher.layers=[1,2,3]", f"data.train_manifest={exact_corpus['train']}",
        f"data.val_manifest={exact_corpus['val']}", *TINY_RUN, "trainer.strategy=ddp", "stages.encoder.steps=8",
        "checkpoint.every_n_steps=4", "trainer.val_check_interval=4", "resume_from=auto",
    ]


@pytest.fixture(scope="module")
def one_node(ddp_command, tmp_path_factory) -> dict:
    """The DDP run on 1 node x 2 devices (Lightning starts the second process) from the plain manifest."""
    exp_dir = tmp_path_factory.mktemp("distill_one_node")
    return {"exp_dir": exp_dir, "output": run_script(*ddp_command, f"exp_dir={exp_dir}", "trainer.devices=2").stdout}


def last_checkpoint(exp_dir: Path) -> dict:
    return torch.load(exp_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def assert_same_student(run: dict, reference: dict) -> None:
    assert run["global_step"] == reference["global_step"]
    assert run["student_state_dict"].keys() == reference["student_state_dict"].keys()
    for name, value in run["student_state_dict"].items():
        torch.testing.assert_close(value, reference["student_state_dict"][name], rtol=0, atol=0, msg=name)


@pytest.mark.multiprocess
@pytest.mark.parametrize("source", ["tarred", "shar"])
def test_two_devices_from_tarred_audio_or_shar_train_as_from_the_plain_manifest(
    source, one_node, ddp_command, exact_corpus, shar, tmp_path
):
    """Both ranks take 5 of the 11 planned batches per epoch from NeMo's archives or Lhotse Shar made from the manifest
    too, and 10 steps end bitwise at the plain manifest's student."""
    if source == "tarred":
        tarred = make_tarred_dataset([exact_corpus["train"]], tmp_path / "tarred", num_shards=2)
        data = tarred_training(tarred.manifest, tarred.archives)
    else:
        data = ["data.train_manifest=null", f"data.train_shar_path={shar}"]  # ddp_command gives the manifest
    output = run_script(*ddp_command, *data, f"exp_dir={tmp_path / 'run'}", "trainer.devices=2").stdout
    planned = "training on 22 utterances: 11 batches of up to 2 each epoch, 5 per rank on 2 ranks"
    assert output.count(planned) == one_node["output"].count(planned) == 2, output[-3000:]
    run = last_checkpoint(tmp_path / "run")
    assert run["global_step"] == 10
    assert_same_student(run, last_checkpoint(one_node["exp_dir"]))


@pytest.fixture(scope="module")
def two_nodes(one_node, ddp_command, tmp_path_factory):
    """The DDP command on 2 nodes x 1 process (torchrun), killed once a checkpoint is written and rerun as it was."""
    work = tmp_path_factory.mktemp("distill_nodes")
    exp_dir = work / "two_nodes"
    node_command = [*ddp_command, f"exp_dir={exp_dir}", "trainer.devices=1", "trainer.num_nodes=2"]

    def checkpoint_written() -> bool:
        steps = checkpoint_steps(exp_dir / "checkpoints")
        return bool(steps) and steps.get("last.ckpt", 0) >= 4

    kill_nodes_when(launch_nodes(SCRIPT, node_command, work / "first"), work / "first", checkpoint_written)
    killed_at = checkpoint_steps(exp_dir / "checkpoints")["last.ckpt"]
    events_before = set((exp_dir / "tensorboard").glob("events.out.tfevents.*"))
    rerun = wait_nodes(launch_nodes(SCRIPT, node_command, work / "rerun"), work / "rerun")
    return {
        "one_node": one_node["exp_dir"], "exp_dir": exp_dir, "killed_at": killed_at, "rerun": rerun,
        "first": [(work / "first" / f"node{node}.log").read_text() for node in range(2)],
        "new_events": set((exp_dir / "tensorboard").glob("events.out.tfevents.*")) - events_before,
    }


@pytest.mark.multiprocess
def test_two_nodes_distil_as_one_node_of_two_devices(two_nodes):
    """Ranks 0 and 1 of one world take the same batches of the plan as on 1 node: killed and resumed, the 2-node run
    ends at the same step with bitwise the same student as the uninterrupted 1 node x 2 devices run."""
    node0, node1 = two_nodes["first"]
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in node0 and "GLOBAL_RANK: 1, MEMBER: 2/2" in node1
    nodes = last_checkpoint(two_nodes["exp_dir"])
    assert nodes["global_step"] == 10
    assert_same_student(nodes, last_checkpoint(two_nodes["one_node"]))
    node0, node1 = two_nodes["rerun"]
    assert "step 10: last checkpoint" in node0 and "student (best, for -k)" in node0
    assert "last checkpoint" not in node1  # only global rank 0 reports and exports the students


@pytest.mark.multiprocess
def test_two_nodes_resume_after_a_kill(two_nodes):
    """Each node restores the killed run's step and continues at that batch of its share of the plan (5 of the 11
    batches of 2 per rank and epoch); the rerun trains only the remaining steps."""
    killed_at = two_nodes["killed_at"]
    assert killed_at in (4, 8), killed_at
    for log in two_nodes["rerun"]:
        assert f"resuming at batch {killed_at % 5} of 5 of epoch {killed_at // 5}" in log
    (events,) = two_nodes["new_events"]
    assert len(logged_steps(events, "train/loss")) == 10 - killed_at
