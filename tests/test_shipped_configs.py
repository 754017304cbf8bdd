"""The shipped Hydra configs are a package resource: an installed project (wheel or editable) composes each of
them away from the checkout, exactly as the checkout does; a checkout without the conf link says how to fix it."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from omegaconf import OmegaConf

from nemo_streaming_ssl.config import compose_config, config_dir
from tests.s3prl_support import REPO, child_env, install_project, make_venv, run

# config -> (overrides, {key: the value that these overrides and the config's defaults list give})
SHIPPED = {
    "nest_fast-conformer_streaming": (
        ["mode=lookahead", "preset=tiny"],
        {"model.encoder.att_context_size": [-1, 4], "model.encoder.d_model": 64},
    ),
    "nest_fast-conformer_offline": (
        ["preset=tiny"],
        {"model.encoder.att_context_size": [-1, -1], "model.encoder.d_model": 64,
         "model.masking._target_": "nemo.collections.asr.modules.RandomBlockMasking"},
    ),
    "fastconformer_ctc_streaming_finetune": (
        ["model.encoder.att_context_size=[[-1,4]]"],
        {"model.encoder.att_context_size": [[-1, 4]], "model.target": "nemo.collections.asr.models.EncDecCTCModelBPE"},
    ),
    "fastconformer_ctc_streaming_finetune_char": (
        ["model.encoder.att_context_size=[[-1,4]]"],
        {"model.encoder.att_context_size": [[-1, 4]], "model.target": "nemo.collections.asr.models.EncDecCTCModel",
         "tokenizer_build": None},
    ),
    "streaming_wavlm_distill": (
        ["student.model.lookahead_size=1"],
        {"student.model.lookahead_size": 1, "student.model.window_size": 512},
    ),
}

# Run in the installed environment, from a scratch folder: where the package and configs came from, and each config.
COMPOSE_INSTALLED = """
import json, sys
from omegaconf import OmegaConf
import nemo_streaming_ssl
from nemo_streaming_ssl.config import compose_config, config_dir
configs = {name: OmegaConf.to_container(compose_config(name, overrides)) for name, overrides in json.loads(sys.argv[1]).items()}
print(json.dumps({"package": nemo_streaming_ssl.__file__, "config_dir": str(config_dir()), "sys_path": sys.path,
                  "heavy_imports": sorted({"nemo", "torch"} & set(sys.modules)), "configs": configs}))
"""


def test_every_top_level_config_is_covered():
    assert set(SHIPPED) == {p.stem for p in config_dir().glob("*.yaml")}


def test_checkout_reads_the_top_level_conf():
    """The package's conf is the top-level conf/ itself (a link, not a copy): edits there are what runs."""
    assert config_dir() == REPO / "conf"


@pytest.mark.parametrize("editable", [False, True], ids=["wheel", "editable"])
def test_installed_project_composes_every_shipped_config(tmp_path, editable):
    python, site_dir = make_venv(tmp_path / "venv")
    install_project(python, tmp_path, editable=editable)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    overrides = {name: case[0] for name, case in SHIPPED.items()}
    out = json.loads(run([python, "-c", COMPOSE_INSTALLED, json.dumps(overrides)], cwd=scratch,
                         env=child_env(with_repo_on_path=False)).stdout)

    assert str(REPO) not in out["sys_path"]
    installed_in = tmp_path / "source" if editable else site_dir  # an editable install runs its source folder
    assert out["package"] == str(installed_in / "nemo_streaming_ssl" / "__init__.py")
    assert out["config_dir"] == str(installed_in / ("conf" if editable else "nemo_streaming_ssl/conf"))
    assert out["heavy_imports"] == []  # the WavLM recipe composes its config without NeMo
    for name, (name_overrides, expected) in SHIPPED.items():
        composed = out["configs"][name]
        assert composed == OmegaConf.to_container(compose_config(name, name_overrides)), name
        for key, value in expected.items():
            assert OmegaConf.select(OmegaConf.create(composed), key) == value, (name, key)


def test_checkout_without_the_conf_link_names_the_fix(tmp_path):
    """git without symlink support checks the link out as a small text file."""
    package = tmp_path / "nemo_streaming_ssl"
    package.mkdir()
    for name in ("__init__.py", "config.py"):
        shutil.copy(REPO / "nemo_streaming_ssl" / name, package / name)
    (package / "conf").write_text("../conf")
    env = {**child_env(with_repo_on_path=False), "PYTHONPATH": str(tmp_path)}
    proc = run([sys.executable, "-c", "from nemo_streaming_ssl.config import config_dir; config_dir()"],
               cwd=tmp_path, env=env, check=False)
    assert proc.returncode == 1
    assert f"{package / 'conf'}: the shipped Hydra configs are not a folder there" in proc.stderr
    assert "git config core.symlinks true" in proc.stderr
