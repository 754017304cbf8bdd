"""A mistyped file path stops our scripts before they import NeMo (~15 s), naming the key and the fix."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_streaming_ssl.cli import path_arguments

REPO = Path(__file__).resolve().parents[1]
# Runs a script as __main__ and reports its exit code and whether NeMo got imported.
PROBE = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exit:
    print("exit", exit.code, "nemo imported:", any(m == "nemo" or m.startswith("nemo.") for m in sys.modules))
"""


def test_path_arguments_reads_hydra_overrides():
    argv = ["+model.train_ds.manifest_filepath=[a.json,b.json]", "model.validation_ds.manifest_filepath=c.json",
            "model.test_ds.manifest_filepath=null", "x.manifest_filepath=${y}", "other=d.json"]
    assert path_arguments(argv, "manifest_filepath") == ["a.json", "b.json", "c.json"]
    assert path_arguments(["model_path='m.nemo'"], "model_path") == ["m.nemo"]


@pytest.mark.parametrize("script,args,named", [
    ("examples/asr/speech_pretraining/streaming_inference_example.py",
     ["model_path={missing}.nemo", "audio_filepath={missing}.wav"], ["model_path=", "audio_filepath="]),
    ("examples/asr/speech_pretraining/masked_token_pred_pretrain.py",
     ["model.train_ds.manifest_filepath={missing}.json"], ["manifest_filepath="]),
    ("examples/asr/speech_to_text_finetune/finetune_streaming_ctc.py",
     ["pretrained_nemo={missing}.nemo"], ["pretrained_nemo="]),
])
def test_missing_paths_stop_before_nemo_is_imported(tmp_path, script, args, named):
    missing = tmp_path / "missing"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", PROBE, str(REPO / script), *(a.format(missing=missing) for a in args)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert "exit 2 nemo imported: False" in result.stdout, result.stdout + result.stderr[-2000:]
    for key in named:
        assert f"{key}{missing}" in result.stderr and "no such file (" in result.stderr
