"""The shared key/value window (nemo_streaming_ssl.core.kv_window) computes what plain concatenation does,
in the two layouts the models use it in, and stays bounded however long the stream."""

from __future__ import annotations

import pytest
import torch

from nemo_streaming_ssl.core.kv_window import KeyValueWindow


@pytest.mark.parametrize("keep_frames", [1, 5, 16])
def test_window_keeps_the_latest_frames_in_a_bounded_buffer(keep_frames):
    """NEST's use: appends of 1-7 frames (some longer than the window) to one window of every layer
    (L, heads, frames, 2 d_head); ``view()`` is exactly the latest frames, the buffer never outgrows its bound."""
    generator = torch.Generator().manual_seed(keep_frames)
    window = KeyValueWindow(keep_frames, torch.zeros(2, 3, 0, 4))
    reference = torch.zeros(2, 3, 0, 4)
    capacities = set()
    for step in range(60):
        new = torch.randn(2, 3, 1 + step % 7, 4, generator=generator)
        window.append(new)
        reference = torch.cat([reference, new], dim=2)[:, :, -keep_frames:]
        assert torch.equal(window.view(), reference), f"step {step}"
        capacities.add(window.buffer.shape[2])
    assert window.appended == sum(1 + step % 7 for step in range(60))
    assert max(capacities) <= keep_frames + max(7, keep_frames // 4)  # bounded: no growth with stream length


def test_append_returns_the_kept_and_new_frames_through_moves_and_growth():
    """The WavLM's use: per layer keys and values stacked (2, B, heads, frames, d_head), made on the first
    append; steps of 1..40 frames with a keep of 10 move the window (overlapping copy) and regrow the buffer,
    and every append returns the frames kept before plus the new ones, as concatenation does."""
    steps = [1, 3] + [1] * 20 + [40] * 10 + [2, 7]
    torch.manual_seed(0)
    keep, window = 10, KeyValueWindow(10)
    history = torch.zeros(2, 2, 3, 0, 4)
    moves, capacities = 0, set()
    for step, n in enumerate(steps):
        new = torch.randn(2, 2, 3, n, 4)
        start_before = window.start
        got = window.append(new)
        moves += window.start < start_before
        capacities.add(window.buffer.shape[-2])
        everything = torch.cat([history, new], dim=-2)
        assert torch.equal(got, everything), f"step {step}"
        history = everything[..., max(0, everything.shape[-2] - keep) :, :]
        assert window.frames == history.shape[-2]
    assert moves >= 2 and len(capacities) >= 2  # both the move and the regrowth were exercised
    picked = window.select([1], dim=1)  # keep the second stream of the batch
    new = torch.randn(2, 1, 3, 2, 4)
    assert torch.equal(picked.append(new), torch.cat([history[:, 1:], new], dim=-2))
    assert torch.equal(window.view(), history)  # selecting copied: the original is untouched


def test_an_empty_window_selects_to_an_empty_window():
    picked = KeyValueWindow(4).select([0], dim=1)
    assert picked.buffer is None and picked.frames == 0 and picked.keep_frames == 4
