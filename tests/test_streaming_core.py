"""The shared streaming core (nemo_streaming_ssl.core): one latency definition for both models, checked against
a sample-by-sample simulation, and the one measure of streamed-vs-one-shot difference. (The shared key/value
window is tested in test_kv_window.py; the shared protocol by both models' streaming tests.)"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from nemo_streaming_ssl.core.exactness import difference
from nemo_streaming_ssl.core.latency import FrameTiming
from nemo_streaming_ssl.streaming.latency import WindowGeometry, frame_timing
from s3prl_upstream.wavlm import StreamingWavLMConfig

NEMO_WINDOW = WindowGeometry(hop_samples=160, win_length=400, n_fft=512, pad_samples=256)


def simulated_worst_wait(timing: FrameTiming, piece_samples: int, frames: int) -> float:
    """The definition, sample by sample: sample i (recorded at i) is stood for by the frame whose span holds it;
    that frame leaves with its chunk once the piece holding the chunk's last needed sample is in hand."""
    worst = 0
    skip = timing.chunk_frames * timing.frame_samples + piece_samples  # the stream's start is not periodic
    for frame in range(frames):
        ready = (frame // timing.chunk_frames * timing.chunk_frames + timing.chunk_frames - 1) * timing.frame_samples
        ready += timing.ready_offset_samples
        leaves = math.ceil(ready / piece_samples) * piece_samples
        first = math.ceil(frame * timing.frame_samples + timing.start_offset_samples)
        for sample in range(max(first, skip), math.ceil(first + timing.frame_samples)):
            worst = max(worst, leaves - sample)
    return 1000.0 * worst / timing.sample_rate


@pytest.mark.parametrize("chunk_frames,piece_samples", list(itertools.product([1, 4, 5], [1, 160, 333, 3200])))
def test_latency_equals_the_sample_by_sample_definition(chunk_frames, piece_samples):
    """Both models' timings, several chunks and piece sizes (aligned with frames or not)."""
    timings = [
        frame_timing(NEMO_WINDOW, sample_rate=16000, subsampling_factor=8, chunk_frames=chunk_frames),
        FrameTiming(16000, 320, chunk_frames, ready_offset_samples=1, start_offset_samples=-319),
    ]
    for timing in timings:
        frames = 4 * math.lcm(timing.chunk_frames * timing.frame_samples, piece_samples) // timing.frame_samples + 20
        assert timing.worst_wait_ms(piece_samples) == pytest.approx(
            simulated_worst_wait(timing, piece_samples, frames), abs=1e-9)


def test_the_documented_numbers_come_from_the_one_definition():
    """NEST: chunk + half a 25 ms window (412.5 ms for [-1, 4], 92.5 ms fully causal); WavLM: its 80 ms block
    (nothing read beyond a frame's span), 100 ms less one sample in 20 ms pieces."""
    nest = lambda chunk: frame_timing(NEMO_WINDOW, sample_rate=16000, subsampling_factor=8, chunk_frames=chunk)
    assert nest(5).report(4).algorithmic_latency_ms == 412.5
    assert nest(1).report(0).algorithmic_latency_ms == 92.5
    assert nest(1).report(0).window_overhang_ms == 12.5
    wavlm = StreamingWavLMConfig().frame_timing
    report = wavlm.report(3)
    assert (report.algorithmic_latency_ms, report.window_overhang_ms, report.chunk_ms) == (80, 0, 80)
    assert wavlm.worst_wait_ms(320) == 1000 * (5 * 320 - 1) / 16000


def test_difference_is_the_largest_of_any_pair_and_refuses_mismatched_shapes():
    want = [torch.ones(3, 2), torch.full((3, 2), 2.0)]
    got = [torch.ones(3, 2), torch.full((3, 2), 2.0)]
    got[1][0, 0] = 2.5
    d = difference(got, want)
    assert d.max_abs == 0.5 and d.relative == pytest.approx(0.5 / math.sqrt(6 * 4))
    assert difference(torch.zeros(0, 4), torch.zeros(0, 4)).max_abs == 0
    with pytest.raises(ValueError, match=r"shapes differ: \(2, 2\) vs reference \(3, 2\)"):
        difference(torch.ones(2, 2), torch.ones(3, 2))
