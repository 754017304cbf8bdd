"""scripts/check_install_space.py: a fresh install stops up front, naming the folder and the numbers."""

import shutil
from pathlib import Path

from tests.script_loader import load_script

check = load_script(Path(__file__).resolve().parents[1] / "scripts" / "check_install_space.py")


def free_gib(path: Path) -> float:
    return shutil.disk_usage(path).free / 2**30


def test_a_need_beyond_the_disk_names_the_folder_and_both_numbers(tmp_path):
    (line,) = check.shortfalls([(str(tmp_path), 1e6, "virtual environment")])
    assert line.startswith(f"{tmp_path}:") and "needs 1000000.0 GiB" in line and "virtual environment" in line
    assert check.shortfalls([(str(tmp_path), 0.0, "virtual environment")]) == []


def test_needs_on_one_filesystem_add_up(tmp_path):
    half = free_gib(tmp_path) / 2 + 1  # each fits alone, both together do not
    assert check.shortfalls([(str(tmp_path / "a"), half, "venv")]) == []
    (line,) = check.shortfalls([(str(tmp_path / "a"), half, "venv"), (str(tmp_path / "b"), half, "downloads")])
    assert "venv" in line and "downloads" in line


def test_a_folder_not_made_yet_is_measured_at_its_nearest_parent(tmp_path):
    assert check.nearest_existing(str(tmp_path / "x" / "y" / ".venv")) == str(tmp_path)


def test_the_command_fails_with_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(check, "VENV_GIB", 1e6)
    assert check.main(["--venv", str(tmp_path / ".venv")]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "VENV=" in err and "TMPDIR=" in err
