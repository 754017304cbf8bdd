"""The user entry point: examples/asr/speech_pretraining/streaming_inference_example.py on a real .nemo and WAV."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from nemo_streaming_ssl.data.manifest import read_manifest
from nemo_streaming_ssl.streaming.untrained import untrained_model
from tests.s3prl_support import child_env, run
from tests.script_loader import load_script
from tests.streaming_helpers import MODES

SCRIPT = Path(__file__).resolve().parents[1] / "examples/asr/speech_pretraining/streaming_inference_example.py"


@pytest.fixture(scope="module")
def example():
    return load_script(SCRIPT)


@pytest.fixture(scope="module")
def nemo_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("example") / "lookahead.nemo"
    untrained_model(MODES["lookahead"]).save_to(str(path))
    return path


def test_example_streams_a_file_and_reports(example, nemo_file, speech_corpus, tmp_path, capsys):
    wav = read_manifest(speech_corpus["val"])[0].audio_filepath
    out = tmp_path / "frames.pt"
    cfg = example.parse(
        [f"model_path={nemo_file}", f"audio_filepath={wav}", "chunk_ms=800", "piece_ms=37", "posteriors=true",
         f"output_path={out}"]
    )
    report = example.main(cfg)
    printed = capsys.readouterr().out
    assert "algorithmic latency      812.5 ms" in printed and "chunk    0: frames    0-9 " in printed
    assert report["max_abs_diff_frames"] < 1e-4 and report["max_abs_diff_log_probs"] < 1e-4
    assert report["chunks"] == printed.count("\nchunk ")
    saved = torch.load(out)
    assert saved["frames"].shape[1] == 64 and saved["log_probs"].shape[0] == saved["frames"].shape[0]
    assert saved["first_token"] == -1  # frame 0 predicts no token: frame t predicts token t-1


def test_example_runs_as_a_script_in_a_fresh_interpreter(nemo_file, speech_corpus):
    """As a user runs it: nothing of ours imported beforehand (NeMo 3.0 refuses our model class unless our
    package has put its prefix on NeMo's allow-list before the restore)."""
    wav = read_manifest(speech_corpus["val"])[0].audio_filepath
    result = run([sys.executable, SCRIPT, f"model_path={nemo_file}", f"audio_filepath={wav}", "chunk_ms=400"],
                 env=child_env(with_repo_on_path=True))
    assert f"model {nemo_file}: StreamingNESTModel" in result.stdout
    (diff,) = re.findall(r"max \|stream - offline\| +(\S+)", result.stdout)
    assert float(diff) < 1e-4


def test_plain_modelpt_restore_in_a_fresh_interpreter_after_importing_our_models(nemo_file):
    program = ("import sys; import nemo_streaming_ssl.models; from nemo.core import ModelPT; "
               "print(type(ModelPT.restore_from(sys.argv[1], map_location='cpu')).__name__)")
    result = run([sys.executable, "-c", program, nemo_file], env=child_env(with_repo_on_path=True))
    assert result.stdout.splitlines()[-1] == "StreamingNESTModel"


def test_example_refuses_bad_options_and_audio(example, nemo_file, tmp_path):
    with pytest.raises(SystemExit, match="missing audio_filepath"):
        example.parse([f"model_path={nemo_file}"])
    with pytest.raises(Exception, match="chunk_msec"):
        example.parse([f"model_path={nemo_file}", "audio_filepath=x.wav", "chunk_msec=400"])
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.zeros((16000, 2), dtype=np.float32), 16000)
    with pytest.raises(SystemExit, match=r"stereo.wav: stream 0: 2-channel"):
        example.main(example.parse([f"model_path={nemo_file}", f"audio_filepath={stereo}"]))
    low_rate = tmp_path / "8k.wav"
    sf.write(low_rate, np.zeros(8000, dtype=np.float32), 8000)
    with pytest.raises(SystemExit, match=r"8k.wav: audio at 8000 Hz, the model expects 16000 Hz"):
        example.main(example.parse([f"model_path={nemo_file}", f"audio_filepath={low_rate}"]))
