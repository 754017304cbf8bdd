"""One experiment folder, one run: a rerun continues a run only with the configuration that made it.

Pretraining, CTC fine-tuning and the distillation recipe resume from the checkpoints in their experiment
folder when rerun. Rerun with another model (another mode, preset, attention context, masking, teacher...)
into the same folder, the new run would load the old weights under the new config, or overwrite the old
run's ``.nemo`` and checkpoints. So each run writes what defines it into ``run_record/config.yaml`` in its folder
(a subfolder: NeMo's exp_manager moves the plain files of a reused log folder into ``run_<n>/``),
and a rerun whose definition differs is refused before anything is built, trained or written, naming every
differing key and how to start a new run. What may change between reruns (data, optimizer, number of steps,
trainer) is not part of the definition.

Plain Python and YAML: no NeMo, so the distillation recipe uses it too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

RECORD_PATH = Path("run_record") / "config.yaml"
MAX_LISTED = 12


class RerunError(ValueError):
    """A rerun would continue or overwrite a run of another configuration; the message names the keys and the fix."""


def config_differences(recorded: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every key whose value differs, as ``"a.b: <recorded> -> <current>"`` (``<absent>`` where a side lacks it)."""
    out = []
    for key in sorted(set(recorded) | set(current), key=str):
        name = f"{prefix}{key}"
        old, new = recorded.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            out += config_differences(old, new, f"{name}.")
        elif old != new:
            out.append(f"{name}: {old} -> {new}")
    return out


def read_record(folder: str | Path) -> dict[str, Any] | None:
    """The definition recorded in ``folder``, or None when it has no record."""
    path = Path(folder) / RECORD_PATH
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text()) or {}


def check_rerun(folder: str | Path, definition: Mapping[str, Any], *, new_run: str,
                earlier: Mapping[str, Any] | None = None) -> None:
    """Raise RerunError when ``folder`` holds a run whose definition differs from ``definition``.

    definition: plain data (dicts, lists, scalars) that defines the run.
    new_run: how to start a new run instead (the settings to change), for the error message.
    earlier: the earlier run's definition when the folder has no record (a run made before records existed).
    """
    folder = Path(folder)
    recorded, source = read_record(folder), str(folder / RECORD_PATH)
    if recorded is None:
        recorded, source = earlier, "its logged config"
    diffs = [] if recorded is None else config_differences(recorded, definition)
    if diffs:
        more = f"\n  ... and {len(diffs) - MAX_LISTED} more" if len(diffs) > MAX_LISTED else ""
        raise RerunError(
            f"{folder} holds a run of another configuration; continuing it with this one would load its weights "
            f"under another configuration and overwrite its checkpoints. What differs (recorded -> now):\n  "
            + "\n  ".join(diffs[:MAX_LISTED]) + more + "\n"
            f"Nothing was trained or overwritten. To start a new run, {new_run}. To continue the earlier run, "
            f"rerun it with its own configuration ({source}).")


def record_run(folder: str | Path, definition: Mapping[str, Any]) -> None:
    """Write ``definition`` as the record of the run in ``folder`` (after check_rerun passed)."""
    path = Path(folder) / RECORD_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    # Every process of a multi-process run writes the same file; the rename keeps readers from a half-written one.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(yaml.safe_dump(dict(definition), sort_keys=True))
    os.replace(tmp, path)


# Parts of a NeMo model config that a rerun may change (data, optimizer), and NeMo's own bookkeeping.
NEMO_RUN_ONLY_KEYS = ("train_ds", "validation_ds", "test_ds", "optim", "target", "nemo_version")


def nemo_model_definition(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What defines a NeMo model run: its resolved ``model`` config without data and optimizer sections."""
    return {key: value for key, value in model_cfg.items() if key not in NEMO_RUN_ONLY_KEYS}


def logged_nemo_model_config(folder: str | Path) -> dict[str, Any] | None:
    """The model config of the newest run that Lightning logged in ``folder`` (``version_*/hparams.yaml``),
    for folders written before run records existed; None when there is none."""
    logged = sorted(Path(folder).glob("version_*/hparams.yaml"), key=lambda p: p.stat().st_mtime)
    if not logged:
        return None
    cfg = (yaml.safe_load(logged[-1].read_text()) or {}).get("cfg")
    return cfg if isinstance(cfg, dict) else None
