"""Our entries reach an unmodified s3prl in fresh interpreters: through the .pth hook that a real (non-editable)
wheel install ships, through `streaming-ssl-s3prl install-hook` (editable installs), and never at the price of
a broken interpreter or an expensive start-up."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from s3prl_upstream import cli, hubconf
from tests.s3prl_support import REPO, child_env, install_project, make_venv, run, save_tiny_checkpoint

PTH = cli.PTH_NAME
STARTUP_PROBE = ("import sys; print('torch' in sys.modules, 's3prl_upstream.registration' in sys.modules, "
                 "sum(type(f).__name__ == 'S3prlHubFinder' for f in sys.meta_path))")  # -> torch? registration? finders


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """A venv with this project installed the way `pip install .` does it: from a built wheel."""
    root = tmp_path_factory.mktemp("wheel")
    python, site_dir = make_venv(root / "venv")
    install_project(python, root, editable=False)
    return python, site_dir, child_env(with_repo_on_path=False)


def test_wheel_installs_the_hook_and_startup_stays_cheap(wheel_venv):
    python, site_dir, env = wheel_venv
    assert (site_dir / PTH).read_text() == cli.PTH_SOURCE.read_text()
    assert run([python, "-c", STARTUP_PROBE], env=env).stdout.split() == ["False", "False", "1"]


@pytest.mark.s3prl
def test_fresh_interpreter_finds_the_entries_in_s3prl_hub(wheel_venv, tmp_path):
    python, site_dir, env = wheel_venv
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.pt")
    probe = (
        "import argparse, torch, s3prl.hub as hub\n"
        "print(sorted(n for n in hub.options() if n.startswith('streaming_')))\n"
        f"upstream = getattr(hub, 'streaming_wavlm_200ms')(ckpt={str(ckpt)!r})\n"
        "with torch.no_grad():\n"
        "    hidden = upstream([torch.randn(16000), torch.randn(8000)])['hidden_states']\n"
        "print(len(hidden), tuple(hidden[0].shape), argparse.Namespace in torch.serialization.get_safe_globals())\n"
        "from s3prl_upstream.cli import main\n"
        "print('status exit code', main(['status']))\n"
    )
    out = run([python, "-c", probe], env=env).stdout
    assert str(sorted(hubconf.ENTRIES)) + "\n2 (2, 50, 64) True\n" in out
    assert f"hook file: {site_dir / PTH}\nhook active in this interpreter: yes" in out
    assert "entries in s3prl.hub: " + ", ".join(hubconf.ENTRIES) in out and "status exit code 0" in out


@pytest.mark.s3prl
def test_console_script_and_uninstall(wheel_venv):
    python, site_dir, env = wheel_venv
    assert "install-hook" in run([python.parent / "streaming-ssl-s3prl", "--help"], env=env).stdout
    run([sys.executable, "-m", "pip", "--python", python, "uninstall", "-q", "-y", "streaming-ssl"], env=env)
    assert not (site_dir / PTH).exists()  # pip removes the .pth with the package
    assert run([python, "-c", STARTUP_PROBE], env=env).stdout.split() == ["False", "False", "0"]


def test_install_hook_and_remove_hook_commands(tmp_path):
    """Editable installs ship no .pth: the command writes (and removes) it. The package comes from PYTHONPATH
    here, as it comes from the source tree in an editable install."""
    python, site_dir = make_venv(tmp_path / "venv")
    env = child_env(with_repo_on_path=True)
    command = [python, "-m", "s3prl_upstream.cli"]
    assert f"installed {site_dir / PTH}" in run([*command, "install-hook"], env=env).stdout
    assert run([python, "-c", STARTUP_PROBE], env=env).stdout.split() == ["False", "False", "1"]
    assert f"removed {site_dir / PTH}" in run([*command, "remove-hook"], env=env).stdout
    assert f"no {PTH}" in run([*command, "remove-hook"], env=env).stdout
    assert run([python, "-c", STARTUP_PROBE], env=env).stdout.split() == ["False", "False", "0"]


def test_hook_never_breaks_the_interpreter(tmp_path):
    """Package uninstalled but .pth left behind: silent. Package broken: one line on stderr, exit code 0."""
    python, site_dir = make_venv(tmp_path / "venv", share_packages=False)
    shutil.copy(cli.PTH_SOURCE, site_dir / PTH)
    gone = run([python, "-c", "print('alive')"], env=child_env(with_repo_on_path=False))
    assert (gone.stdout, gone.stderr) == ("alive\n", "")

    broken = tmp_path / "broken"
    (broken / "s3prl_upstream").mkdir(parents=True)
    (broken / "s3prl_upstream" / "__init__.py").write_text("raise RuntimeError('half-installed')\n")
    env = {**child_env(with_repo_on_path=False), "PYTHONPATH": str(broken)}
    result = run([python, "-c", "print('alive')"], env=env)
    assert result.stdout == "alive\n"
    # (Python 3.11 runs a venv's .pth files twice; the hook is idempotent, the message may repeat.)
    assert set(result.stderr.splitlines()) == {"streaming-ssl: s3prl hook disabled: RuntimeError('half-installed')"}


@pytest.mark.s3prl
def test_s3prl_still_imports_when_registration_fails(tmp_path):
    """The hook loads but our entries cannot be built (here: the model package is missing): s3prl.hub imports,
    its own upstreams work, and stderr says what went wrong."""
    python, site_dir = make_venv(tmp_path / "venv")
    shutil.copy(cli.PTH_SOURCE, site_dir / PTH)
    partial = tmp_path / "partial" / "s3prl_upstream"
    partial.mkdir(parents=True)
    for name in ("__init__.py", "s3prl_hook.py", "registration.py", "hubconf.py", "expert.py"):
        shutil.copy(REPO / "s3prl_upstream" / name, partial / name)  # no wavlm/ model package
    env = {**child_env(with_repo_on_path=False), "PYTHONPATH": str(partial.parent)}
    result = run([python, "-c", "import s3prl.hub as hub; print(callable(hub.wavlm_local), hasattr(hub, 'streaming_wavlm'))"],
                 env=env)
    assert result.stdout.strip().splitlines()[-1] == "True False"
    assert "streaming-ssl: could not add the streaming_wavlm/streaming_nest entries to s3prl.hub: ModuleNotFoundError" in result.stderr


def test_launcher_stops_early_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"downstream/asr/config.yaml does not exist.*s3prl/s3prl"):
        cli.main(["run-downstream", "--", "-m", "train", "-u", "streaming_wavlm", "-d", "asr", "--device", "cpu"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="add --device cpu"):
            cli.main(["run-downstream", "-m", "evaluate", "-e", "states-4.ckpt"])


def test_run_downstream_argument_split():
    assert cli._split_run_downstream(["--script", "rd.py", "--", "-m", "train"]) == ("rd.py", ["-m", "train"])
    assert cli._split_run_downstream(["-m", "train", "-o", "x=1"]) == (None, ["-m", "train", "-o", "x=1"])
