"""Bounded cost (small scale): with limited left context every tensor the stream carries stops growing.

Per-chunk time over a long stream is measured by scripts/bench_streaming.py, not here.
"""

from __future__ import annotations

import pytest

from nemo_streaming_ssl.streaming import StreamingEncoderRunner
from nemo_streaming_ssl.streaming.untrained import untrained_model
from tests.streaming_helpers import MODES, noise_audio


def carried_sizes(runner, state) -> dict[str, tuple]:
    """Every tensor a stream carries between pieces, plus the runner's position tables."""
    stream = state.streams[0]
    enc = stream.encoder
    return {
        "att_cache": tuple(enc.att_cache.view().shape),
        "att_cache_buffer": tuple(enc.att_cache.buffer.shape),
        "conv_cache": tuple(enc.conv_cache.shape),
        "history_mels": tuple(enc.history_mels.shape),
        "pending_mels": tuple(enc.pending_mels.shape),
        "feature_buffer": tuple(stream.features.buffer.shape),
        "position_table": tuple(runner.attention[0].position_table.shape),
        "last_steps": (len(state.last_steps),),
    }


@pytest.mark.parametrize(
    "mode,options,cache_frames",
    [
        ("left_context", {}, 16),  # att_context_size [16, 0]
        ("left_context_lookahead", {"chunk_frames": 4}, 8),  # [8, 1], two attention chunks per step
        ("causal", {"max_left_context_frames": 24}, 24),  # unlimited left context, capped cache
    ],
)
def test_state_stops_growing_after_warm_up(mode, options, cache_frames):
    runner = StreamingEncoderRunner(untrained_model(MODES[mode]), **options)
    audio = noise_audio(16.0)  # 200 frames, far beyond the left context
    piece = runner.chunk_frames * 1280  # one chunk of audio per piece, as in real time
    state = runner.new_state(1, sample_rate=16000)
    sizes = []
    for i in range(0, audio.numel(), piece):
        out = runner.feed(state, audio[i : i + piece])[0]
        if out.first_frame > 2 * cache_frames:  # warmed up
            sizes.append(carried_sizes(runner, state))
    assert len(sizes) >= 40
    assert all(s == sizes[0] for s in sizes), "a carried tensor changed size after warm-up"
    assert sizes[0]["att_cache"][2] == cache_frames  # (layers, heads, frames, 2 d_head)
    assert sizes[0]["feature_buffer"][0] < 400 + piece  # at most one piece plus one analysis window
    assert sizes[0]["pending_mels"][1] < 8 * runner.chunk_frames + 1
