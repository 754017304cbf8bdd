"""Helpers for the s3prl tests: tiny checkpoints on disk, fresh interpreters with the import hook, and a
temporary s3prl-like folder to run s3prl's own run_downstream.py from."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import torch
import yaml

from s3prl_upstream.example_task import write_example_task

REPO = Path(__file__).resolve().parents[1]
SHARED_SITE = Path(sysconfig.get_paths()["purelib"])  # where torch, s3prl, ... live for this interpreter

# 2 layers, dim 64, 4 heads, 32 conv channels, a 16-frame window (so short audio already slides it).
TINY_MODEL = {"wavlm": {"hidden_dims": [32] * 7, "num_layers": 2, "dim": 64, "ffn_dim": 128, "num_heads": 4,
                        "conv_pos": 16, "conv_pos_groups": 4, "window_size": 16, "lookahead_size": 3}}


def save_tiny_checkpoint(path: Path, embed_config: bool = True, seed: int = 0) -> Path:
    """A real checkpoint file of a random tiny streaming WavLM: {student_state_dict, model_config} or the bare
    state dict (then the model config must come from -g, see :func:`write_model_config`)."""
    from s3prl_upstream.wavlm import StreamingWavLM, StreamingWavLMConfig

    torch.manual_seed(seed)
    model = StreamingWavLM(StreamingWavLMConfig.from_dict(TINY_MODEL))
    state = model.state_dict()
    torch.save({"student_state_dict": state, "model_config": TINY_MODEL} if embed_config else state, path)
    return path


def write_model_config(path: Path, model_config: dict = TINY_MODEL) -> Path:
    path.write_text(yaml.safe_dump(model_config))
    return path


def child_env(with_repo_on_path: bool) -> dict[str, str]:
    """Environment for a child interpreter: 2 threads; the repository importable only when asked."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    if with_repo_on_path:
        env["PYTHONPATH"] = str(REPO)
    return env


def run(cmd: list[str | Path], cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
    """Runs a command; on failure the assertion shows the command and the end of its output."""
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                                      f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


def make_venv(root: Path, share_packages: bool = True) -> tuple[Path, Path]:
    """A fresh virtual environment whose sys.path also holds this interpreter's site-packages (a plain path
    entry: their .pth files, e.g. a hook or an editable install of this project, are not run), so torch and
    s3prl import but streaming-ssl only comes from what the test installs. ``share_packages=False``: a bare
    venv (start-up tests). Returns (python, site-packages)."""
    run([sys.executable, "-m", "venv", "--without-pip", root])
    python = root / "bin" / "python"
    site_dir = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    if share_packages:  # "_" sorts before the letters: the shared packages are on sys.path before our .pth runs
        (site_dir / "_shared_packages.pth").write_text(f"{SHARED_SITE}\n")
    return python, site_dir


def install_project(python: Path, root: Path, editable: bool) -> None:
    """pip-installs a copy of this project into ``python``'s venv, without dependencies or network: as a built
    wheel (what `pip install .` does) or editable (what `make install` does; then run install-hook yourself)."""
    source = root / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("s3prl_upstream", "nemo_streaming_ssl", "conf"):  # links kept: nemo_streaming_ssl/conf -> ../conf
        shutil.copytree(REPO / folder, source / folder, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip"]
    quiet = ["-q", "--no-deps", "--no-index", "--no-build-isolation"]
    env = child_env(with_repo_on_path=False)
    if editable:
        run([*pip, "--python", python, "install", *quiet, "-e", source], env=env)
        return
    run([*pip, "wheel", *quiet, "-w", root / "dist", source], env=env)
    (wheel,) = (root / "dist").glob("streaming_ssl-*.whl")
    run([*pip, "--python", python, "install", *quiet[:3], wheel], env=env)


def make_s3prl_workdir(root: Path) -> Path:
    """What `cd s3prl/s3prl` gives in an s3prl clone: run_downstream.py (the installed one, unmodified) and
    downstream/example/config.yaml (the pip package ships no config files): 2 steps, a checkpoint after each."""
    import s3prl

    workdir = root / "s3prl"
    write_example_task(workdir, total_steps=2, save_step=1)
    shutil.copy(Path(s3prl.__file__).parent / "run_downstream.py", workdir / "run_downstream.py")
    return workdir
