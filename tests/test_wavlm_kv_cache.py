"""The streaming WavLM's KV cache (preallocated, compacted buffers) computes what plain concatenation does.

The few-row linear path is tested for both models in test_fast_linear.py.
"""

from __future__ import annotations

import torch

from s3prl_upstream.wavlm.encoder import KVCache


def reference_append(history: torch.Tensor, new: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    everything = torch.cat([history, new], dim=2)
    return everything, everything[:, :, max(0, everything.shape[2] - keep):]


def test_kv_cache_equals_concatenation_through_compaction_and_growth():
    """Steps of 1..40 frames with a keep of 10: buffers get compacted (overlapping move) and regrown."""
    steps = [1, 3] + [1] * 20 + [40] * 10 + [2, 7]
    torch.manual_seed(0)
    keep, cache = 10, KVCache(10)
    keys_history, values_history = torch.zeros(2, 3, 0, 4), torch.zeros(2, 3, 0, 4)
    compactions, capacities = 0, set()
    for step, new in enumerate(steps):
        keys, values = torch.randn(2, 3, new, 4), torch.randn(2, 3, new, 4)
        start_before = cache.start
        got_keys, got_values = cache.append(keys, values)
        compactions += cache.start < start_before
        capacities.add(cache.keys.shape[2])
        want_keys, keys_history = reference_append(keys_history, keys, keep)
        want_values, values_history = reference_append(values_history, values, keep)
        assert torch.equal(got_keys, want_keys) and torch.equal(got_values, want_values), f"step {step}"
        assert cache.frames == keys_history.shape[2]
    assert compactions >= 2 and len(capacities) >= 2  # both the move and the regrowth were exercised
    picked = cache.select([1])
    assert torch.equal(picked.append(keys[1:], values[1:])[0], torch.cat([keys_history[1:], keys[1:]], dim=2))
