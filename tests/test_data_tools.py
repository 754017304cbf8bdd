"""The corpus generator and the manifest builder/validator, on real files written and read with soundfile."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nemo_streaming_ssl.data.corpus import make_corpus, utterance_specs
from nemo_streaming_ssl.data.manifest import ManifestError, read_manifest, validate_manifest

REPO = Path(__file__).resolve().parents[1]


def test_corpus_is_speech_with_transcripts(speech_corpus):
    train = read_manifest(speech_corpus["train"])
    val = read_manifest(speech_corpus["val"])
    assert len(train) + len(val) == 24 and len(val) >= 1
    assert not {e.audio_filepath for e in train} & {e.audio_filepath for e in val}
    for entry in train[:5]:
        audio, rate = sf.read(entry.audio_filepath)
        assert rate == 16000 and audio.ndim == 1
        assert abs(len(audio) / rate - entry.duration) < 1e-3
        assert 0.5 < entry.duration < 10.0
        assert np.sqrt(np.mean(audio**2)) > 0.01  # not silence
        assert entry.text and entry.text == Path(entry.audio_filepath).with_suffix(".txt").read_text().strip()
    noise = validate_manifest(speech_corpus["noise"], 16000)
    assert len(noise.entries) == 4


def test_corpus_varies_voices_and_is_deterministic(tmp_path):
    specs = utterance_specs(40, seed=7)
    assert len({s.voice for s in specs}) >= 4 and len({s.rate_wpm for s in specs}) >= 3 and len({s.pitch for s in specs}) >= 3
    assert specs == utterance_specs(40, seed=7) and specs != utterance_specs(40, seed=8)
    first = make_corpus(tmp_path / "a", num_utterances=3, num_noise=1, seed=5, val_fraction=0.0, progress=False)
    second = make_corpus(tmp_path / "b", num_utterances=3, num_noise=1, seed=5, val_fraction=0.0, progress=False)
    for a, b in zip(read_manifest(first["train"]), read_manifest(second["train"])):
        assert np.array_equal(sf.read(a.audio_filepath)[0], sf.read(b.audio_filepath)[0])
    assert np.array_equal(
        sf.read(read_manifest(first["noise"])[0].audio_filepath)[0], sf.read(read_manifest(second["noise"])[0].audio_filepath)[0]
    )


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def good_line(wav: Path, duration: float) -> str:
    return json.dumps({"audio_filepath": str(wav), "duration": duration, "text": ""})


@pytest.fixture
def one_wav(tmp_path) -> Path:
    wav = tmp_path / "ok.wav"
    sf.write(wav, np.zeros(8000, dtype=np.float32) + 0.1, 16000)
    return wav


def write_bad_file(directory: Path, kind: str) -> Path:
    path = directory / f"{kind}.wav"
    if kind == "garbage":
        path.write_bytes(b"not a wav at all" * 10)
    elif kind == "sr8k":
        sf.write(path, np.zeros(4000), 8000)
    elif kind == "empty":
        sf.write(path, np.zeros(0), 16000)
    elif kind == "stereo":
        sf.write(path, np.zeros((16000, 2)), 16000)
    return path  # kind "missing": never written


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "audio file not found"),
        ("garbage", "unreadable audio"),
        ("sr8k", "sample rate 8000 Hz"),
        ("empty", "zero-length audio"),
        ("stereo", "2 channels"),
    ],
)
def test_bad_audio_is_named_with_its_line(tmp_path, one_wav, kind, message):
    bad = write_bad_file(tmp_path, kind)
    manifest = write_lines(tmp_path / "m.json", [good_line(one_wav, 0.5), good_line(bad, 1.0)])
    with pytest.raises(ManifestError, match=message) as err:
        validate_manifest(manifest, 16000)
    assert f"{manifest}:2" in str(err.value) and str(bad) in str(err.value)


def test_malformed_json_empty_manifest_and_stale_duration(tmp_path, one_wav):
    with pytest.raises(ManifestError, match=r"m1.json:2: malformed JSON"):
        validate_manifest(write_lines(tmp_path / "m1.json", [good_line(one_wav, 0.5), '{"audio_filepath": ']), 16000)
    with pytest.raises(ManifestError, match="empty manifest"):
        validate_manifest(write_lines(tmp_path / "m2.json", [""]), 16000)
    with pytest.raises(ManifestError, match=r"m3.json:1: duration says 3.000 s"):
        validate_manifest(write_lines(tmp_path / "m3.json", [good_line(one_wav, 3.0)]), 16000)
    with pytest.raises(ManifestError, match="manifest not found"):
        validate_manifest(tmp_path / "nope.json", 16000)


def test_duration_limits_are_counted_not_silent(tmp_path, one_wav):
    long_wav = tmp_path / "long.wav"
    sf.write(long_wav, np.full(48000, 0.1, dtype=np.float32), 16000)
    manifest = write_lines(tmp_path / "m.json", [good_line(one_wav, 0.5), good_line(long_wav, 3.0)])
    report = validate_manifest(manifest, 16000, min_duration=1.0)
    assert [e.line_no for e in report.entries] == [2] and [e.line_no for e in report.out_of_range] == [1]
    assert "1 more" in report.summary()
    with pytest.raises(ManifestError, match="outside the duration limits"):
        validate_manifest(manifest, 16000, min_duration=5.0)


def test_build_manifest_cli(tmp_path, one_wav):
    (tmp_path / "ok.txt").write_text("hello there\n")
    out = tmp_path / "manifests"
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts/build_manifest.py"), str(tmp_path), "--out-dir", str(out), "--val-fraction", "0"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert run.returncode == 0, run.stderr
    (entry,) = read_manifest(out / "train.json")
    assert entry.text == "hello there" and entry.duration == 0.5
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000")
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts/build_manifest.py"), str(tmp_path), "--out-dir", str(out)],
        capture_output=True, text=True, cwd=REPO,
    )
    assert run.returncode == 2 and "bad.wav: unreadable audio" in run.stderr
