"""Causal block masking: the definitions of STREAMING_NEST.md ("Causal masking") checked on random masks."""

import pytest
import torch

from nemo_streaming_ssl.modules import CausalBlockMasking
from nemo_streaming_ssl.receptive_field import ReceptiveField


def spans(token_mask: torch.Tensor) -> list[tuple[int, int]]:
    """(K,) bool -> [(first, last)] runs of masked tokens."""
    runs, start = [], None
    for k, masked in enumerate(token_mask.tolist() + [False]):
        if masked and start is None:
            start = k
        elif not masked and start is not None:
            runs.append((start, k - 1))
            start = None
    return runs


@pytest.mark.parametrize("block_size, left_context, mask_prob", [(40, 0, 0.33), (16, 4, 0.3), (8, 2, 0.2), (24, 6, 0.33)])
def test_random_masks_follow_the_definition(block_size, left_context, mask_prob):
    torch.manual_seed(block_size + left_context)
    masking = CausalBlockMasking(80, mask_prob, block_size, 8, left_context)
    span_tokens, min_gap = block_size // 8, max(1, left_context)
    lengths = torch.randint(1, 900, (64,))
    feats = torch.randn(64, 80, 900)
    masked_feats, masks = masking(feats, lengths)
    assert masks.shape == feats.shape
    assert torch.equal(masks, masks[:, :1].expand_as(masks))  # whole frames
    mask_frames = masks[:, 0].bool()
    # No leak: every masked frame holds the mask embedding, every other frame the input.
    embedding = masking.mask_embedding.view(1, -1, 1).expand_as(feats)
    assert torch.equal(masked_feats[masks.bool()], embedding[masks.bool()])
    assert torch.equal(masked_feats[~masks.bool()], feats[~masks.bool()])
    for b, length in enumerate(lengths.tolist()):
        num_tokens = length // 8
        assert not mask_frames[b, num_tokens * 8 :].any()  # tail frames and padding never masked
        per_token = mask_frames[b, : num_tokens * 8].view(num_tokens, 8)
        assert torch.all(per_token.all(1) | ~per_token.any(1))  # a token is fully masked or untouched
        runs = spans(per_token.all(1))
        for i, (first, last) in enumerate(runs):
            size = last - first + 1
            assert size == span_tokens or (size < span_tokens and last == num_tokens - 1)
            assert first >= left_context  # context before the first span exists
            if i:
                assert first - runs[i - 1][1] - 1 >= min_gap  # spans never merge; context before every span


def test_mask_fraction_matches_mask_prob():
    torch.manual_seed(0)
    masking = CausalBlockMasking(4, mask_prob=0.33, block_size=40, combine_time_steps=8, left_context_size=2)
    token_mask = masking.sample_token_mask(torch.full((256,), 2000), 2000)
    assert abs(token_mask.float().mean().item() - 0.33) < 0.02


@pytest.mark.parametrize("pair", [(320, 0), (12, 0), (10, 4), (9, 2), (6, 0)])
def test_context_lies_inside_every_predicting_frames_window(pair):
    """The guarantee: with block/8 + left_context_size <= left + 1, for every masked token k the predicting
    frame's attention window holds the covering frames of the left_context_size unmasked tokens before k's span."""
    left, right = pair
    left_context = 3 if left >= 12 else 2
    block_tokens = min(8, left + 1 - left_context)  # the largest span the check allows, capped
    masking = CausalBlockMasking(4, mask_prob=0.25, block_size=8 * block_tokens, left_context_size=left_context)
    field = ReceptiveField(8, left, right, chunked=True, num_layers=2)
    torch.manual_seed(sum(pair))
    token_mask = masking.sample_token_mask(torch.randint(5, 300, (32,)), 300)
    checked = 0
    for row in token_mask:
        for first, last in spans(row):
            context = torch.arange(first - left_context, first)
            assert context.min() >= 0 and not row[context].any()
            tokens = torch.arange(first, last + 1)
            window_first, window_last = field.attention_window(field.prediction_frame(tokens))
            covering = field.covering_frame(context)
            assert torch.all(window_first <= covering.min()) and torch.all(covering.max() <= window_last)
            checked += len(tokens)
    assert checked > 100


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="masking.block_size"):
        CausalBlockMasking(80, block_size=36)
    with pytest.raises(ValueError, match="masking.mask_prob"):
        CausalBlockMasking(80, mask_prob=0.6, block_size=16, left_context_size=4)  # 2 / (2 + 4) max
    with pytest.raises(ValueError, match="masking.left_context_size"):
        CausalBlockMasking(80, left_context_size=-1)


def test_masks_live_on_the_input_device_and_dtype():
    masking = CausalBlockMasking(8, mask_prob=0.5, block_size=8)
    feats = torch.randn(2, 8, 100, dtype=torch.float64)
    masked, masks = masking(feats, torch.tensor([100, 60]))
    assert masked.dtype == masks.dtype == torch.float64 and masks.device == feats.device


def test_one_token_more_than_the_check_allows_breaks_the_guarantee():
    """The construction check is tight: block/8 + left_context_size = left + 2 lets the window miss context."""
    left, left_context = 6, 2
    masking = CausalBlockMasking(4, mask_prob=0.25, block_size=8 * (left + 2 - left_context), left_context_size=left_context)
    field = ReceptiveField(8, left, 0)
    torch.manual_seed(7)
    missed = 0
    for row in masking.sample_token_mask(torch.full((8,), 300), 300):
        for first, last in spans(row):
            window_first, _ = field.attention_window(field.prediction_frame(torch.arange(first, last + 1)))
            missed += int((window_first > field.covering_frame(torch.tensor(first - left_context))).sum())
    assert missed > 0
