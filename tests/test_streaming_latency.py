"""Algorithmic latency: the arithmetic against hand-computed values, and the runner's real emission times."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nemo_streaming_ssl.streaming import StreamingEncoderRunner, WindowGeometry, algorithmic_latency
from nemo_streaming_ssl.streaming.untrained import untrained_model
from tests.streaming_helpers import MODES, noise_audio

NEMO_WINDOW = WindowGeometry(hop_samples=160, win_length=400, n_fft=512, pad_samples=256)  # 10 ms hop, 25 ms window


@pytest.mark.parametrize(
    "geometry,chunk_frames,lookahead,expected",
    [
        # [-1, 4], one attention chunk: 5 frames x 80 ms + 200 samples (12.5 ms) of window after the centre
        (NEMO_WINDOW, 5, 4, dict(chunk_ms=400, algorithmic_latency_ms=412.5, lookahead_ms=332.5, first_output_ms=332.5)),
        # two attention chunks per step
        (NEMO_WINDOW, 10, 4, dict(chunk_ms=800, algorithmic_latency_ms=812.5, lookahead_ms=732.5, first_output_ms=732.5)),
        # fully causal, one frame per step: the first frame (mel 0) leaves once samples [0, 200) arrived
        (NEMO_WINDOW, 1, 0, dict(chunk_ms=80, algorithmic_latency_ms=92.5, lookahead_ms=12.5, first_output_ms=12.5)),
        # 20 ms window: half of it is 10 ms
        (WindowGeometry(160, 320, 512, 256), 5, 4, dict(algorithmic_latency_ms=410.0, first_output_ms=330.0)),
        # NeMo's exact_pad: (512-160)/2 = 176 samples of padding; centre of mel 0 at 80 samples (5 ms)
        (WindowGeometry(160, 400, 512, 176), 1, 0, dict(algorithmic_latency_ms=92.5, first_output_ms=17.5)),
    ],
)
def test_latency_arithmetic(geometry, chunk_frames, lookahead, expected):
    report = algorithmic_latency(
        geometry, sample_rate=16000, subsampling_factor=8, chunk_frames=chunk_frames, lookahead_frames=lookahead
    )
    assert report.frame_ms == 80.0
    for key, value in expected.items():
        assert getattr(report, key) == pytest.approx(value, abs=1e-9), key


def test_latency_needs_a_chunk():
    with pytest.raises(ValueError, match="chunk_frames"):
        algorithmic_latency(NEMO_WINDOW, sample_rate=16000, subsampling_factor=8, chunk_frames=0, lookahead_frames=0)


@pytest.mark.parametrize("mode,chunks", [("causal", 1), ("lookahead", 1), ("lookahead", 2)])
def test_runner_emits_frames_at_the_computed_latency(mode, chunks):
    """Feed 40-sample pieces (200 and 1280 are multiples of 40) and record when each frame leaves.

    Frame t stands for the 80 ms ending at the centre of mel frame 8t; the longest wait of any sample,
    (arrival of the frame) - (start of what it stands for), must be the computed latency, and the first
    frame must leave after exactly ``first_output_ms`` of audio.
    """
    model = untrained_model(MODES[mode])
    chunk = chunks * (model.encoder.att_context_size[1] + 1)
    runner = StreamingEncoderRunner(model, chunk_frames=chunk)
    report = runner.latency
    audio = noise_audio(3.0)
    state = runner.new_state(1, sample_rate=16000)
    emitted_at = []  # samples received when each frame left
    for i in range(0, audio.numel(), 40):
        out = runner.feed(state, audio[i : i + 40])[0]
        emitted_at += [i + 40] * len(out.frames)
    geometry = runner.spec.geometry
    waits = [at - geometry.centre_sample(8 * (t - 1)) for t, at in enumerate(emitted_at) if t >= 1]
    assert max(waits) / 16 == pytest.approx(report.algorithmic_latency_ms)
    assert emitted_at[0] / 16 == pytest.approx(report.first_output_ms)
    assert len(emitted_at) >= 3 * chunk
    # frames leave together, one chunk at a time
    assert all(emitted_at[t] == emitted_at[t - t % chunk] for t in range(len(emitted_at)))


@pytest.mark.parametrize("mode,piece_ms", [("causal", 80), ("causal", 50), ("lookahead", 400)])
def test_runner_in_pieces_waits_as_the_shared_definition_says(mode, piece_ms):
    """Audio handed over in pieces (as the s3prl entries feed one chunk per call): the longest wait of any sample
    is the shared definition's ``worst_wait_ms(piece)``, e.g. 160 ms for 80 ms chunks fed as 80 ms pieces (the
    last frame of a chunk reads 12.5 ms of the next piece)."""
    runner = StreamingEncoderRunner(untrained_model(MODES[mode]))
    piece = piece_ms * 16
    audio = noise_audio(4.0)
    state = runner.new_state(1, sample_rate=16000)
    emitted_at = []
    for i in range(0, audio.numel(), piece):
        emitted_at += [i + piece] * len(runner.feed(state, audio[i : i + piece])[0].frames)
    geometry = runner.spec.geometry
    waits = [at - geometry.centre_sample(8 * (t - 1)) for t, at in enumerate(emitted_at) if t >= 1]
    assert max(waits) / 16 == pytest.approx(runner.timing.worst_wait_ms(piece))
    if (mode, piece_ms) == ("causal", 80):
        assert runner.timing.worst_wait_ms(piece) == 160


def test_latency_arithmetic_needs_no_nemo():
    """The latency module is plain arithmetic: planning tools can import it without NeMo (or torch)."""
    code = "import sys, nemo_streaming_ssl.streaming.latency; assert 'nemo' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
