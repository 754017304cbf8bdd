"""Teacher loading and frame alignment: s3prl's installed WavLM as teacher, on the student's frame grid."""

from __future__ import annotations

import math

import pytest
import torch

from s3prl_upstream.distillation.alignment import (
    causal_frames,
    hop_samples,
    receptive_field_samples,
    teacher_left_pad_samples,
    valid_frames,
)
from s3prl_upstream.distillation.teacher import S3PRLWavLMTeacher, TeacherError, load_teacher
from s3prl_upstream.wavlm.checkpoint import TRUST_PICKLE_ENV
from tests.distillation_support import teachers  # noqa: F401 (a fixture)
from tests.wavlm_helpers import RunsCodeWhenUnpickled, TrainingNote

WAVLM_CONV = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2


def test_wavlm_conv_timing():
    assert hop_samples(WAVLM_CONV) == 320
    assert receptive_field_samples(WAVLM_CONV) == 400
    assert teacher_left_pad_samples(WAVLM_CONV) == 399


@pytest.mark.parametrize("num_samples", [1, 319, 320, 321, 399, 400, 401, 719, 720, 16000, 16001, 16319, 48000])
def test_frame_counts(num_samples):
    student = causal_frames(num_samples, WAVLM_CONV)
    assert student == math.ceil(num_samples / 320)
    teacher = valid_frames(num_samples, WAVLM_CONV)
    assert teacher == (max(0, (num_samples - 400) // 320 + 1) if num_samples >= 400 else 0)
    # the 399-sample left pad gives the teacher exactly the student's frame count
    assert valid_frames(num_samples + 399, WAVLM_CONV) == student


@pytest.mark.s3prl
def test_s3prl_teacher_frames_match_the_student_grid(teachers):
    teacher, _ = load_teacher(teachers["large"], [1, 2, 3])
    for num_samples in (400, 1000, 3201, 8000):
        out = teacher(torch.randn(2, num_samples))
        frames = math.ceil(num_samples / 320)
        assert teacher.num_frames(num_samples) == frames
        assert out.positional.shape == (2, frames, 32)
        assert [tuple(h.shape) for h in out.layers] == [(2, frames, 32)] * 3


@pytest.mark.s3prl
def test_s3prl_teacher_matches_s3prl_upstream_hidden_states(teachers):
    """Our teacher's layer outputs are s3prl's own WavLM expert's hidden states on the left-padded waveform."""
    from s3prl.upstream.wavlm.expert import UpstreamExpert

    teacher, _ = load_teacher(teachers["base"], [1, 2])
    expert = UpstreamExpert(str(teachers["base"])).eval()
    wav = torch.randn(4000)
    with torch.no_grad():
        ours = teacher(wav[None])
        theirs = expert([torch.nn.functional.pad(wav, (399, 0))])["hidden_states"]
    # s3prl's hidden_states[i] is the input of layer i (= output of layer i-1); the last is after the final LayerNorm
    for k, layer in enumerate([1, 2]):
        torch.testing.assert_close(ours.layers[k][0], theirs[layer][0], rtol=1e-4, atol=1e-5)
    assert isinstance(teacher, S3PRLWavLMTeacher) and teacher.layers == [1, 2]
    assert len(teacher.model.encoder.layers) == 2  # layers past the last distilled one are dropped


@pytest.mark.s3prl
def test_large_style_teacher_normalizes_waveform_like_s3prl(teachers):
    """normalize=True checkpoints see each crop at zero mean, unit variance: the input scale does not matter."""
    teacher, _ = load_teacher(teachers["large"], [3])
    wav = torch.randn(1, 3200)
    torch.testing.assert_close(teacher(wav).layers[0], teacher(5.0 * wav + 0.3).layers[0], rtol=1e-4, atol=1e-4)


@pytest.mark.s3prl
def test_teacher_layer_selection_and_errors(teachers, tmp_path):
    wav = torch.randn(1, 2000)
    some, _ = load_teacher(teachers["large"], [1, 3])
    full, _ = load_teacher(teachers["large"], [1, 2, 3])
    picked, every = some(wav), full(wav)
    assert len(picked.layers) == 2 and len(every.layers) == 3
    torch.testing.assert_close(picked.layers[0], every.layers[0])
    torch.testing.assert_close(picked.layers[1], every.layers[2])

    for layers in ([], [0, 1], [2, 1], [1, 4]):
        with pytest.raises(TeacherError, match="teacher.layers"):
            load_teacher(teachers["large"], layers)

    unknown = tmp_path / "unknown.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, unknown)
    with pytest.raises(TeacherError, match=r"unknown layout.*\['state_dict'\].*WavLM-Large"):
        load_teacher(unknown, [1])

    with pytest.raises(TeacherError, match=r"missing.pt \(given as teacher.checkpoint\) does not exist"):
        load_teacher(tmp_path / "missing.pt", [1])

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(TeacherError, match="not a readable torch checkpoint"):
        load_teacher(garbage, [1])

    mismatched = tmp_path / "mismatched.pt"
    ckpt = torch.load(teachers["large"], weights_only=True)
    ckpt["cfg"]["encoder_layers"] = 4  # cfg says 4 layers, weights hold 3
    torch.save(ckpt, mismatched)
    with pytest.raises(TeacherError, match="do not match the checkpoint's own cfg"):
        load_teacher(mismatched, [1])


@pytest.mark.s3prl
def test_teacher_file_is_read_weights_only_unless_trusted(teachers, tmp_path, monkeypatch):
    """The teacher goes through the streaming WavLM's loader: pickled code never runs without an opt-in."""
    monkeypatch.delenv(TRUST_PICKLE_ENV, raising=False)
    ckpt = torch.load(teachers["large"], weights_only=True)
    marker = tmp_path / "code_ran"
    hostile = tmp_path / "hostile.pt"
    torch.save({**ckpt, "payload": RunsCodeWhenUnpickled(marker)}, hostile)
    with pytest.raises(TeacherError) as info:
        load_teacher(hostile, [1], given_as="--teacher")
    assert not marker.exists()
    message = str(info.value)
    assert f"{hostile} (given as --teacher) contains pickled Python objects" in message
    assert "teacher.trust_pickle=true" in message and f"{TRUST_PICKLE_ENV}=1" in message

    legacy = tmp_path / "legacy.pt"
    torch.save({**ckpt, "note": TrainingNote("saved by an old trainer")}, legacy)
    with pytest.raises(TeacherError, match=r"contains pickled Python objects \(.*TrainingNote\)"):
        load_teacher(legacy, [1])
    teacher, loaded = load_teacher(legacy, [1], trust_pickle=True)
    assert isinstance(teacher, S3PRLWavLMTeacher) and loaded["note"] == TrainingNote("saved by an old trainer")
