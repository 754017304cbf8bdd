"""Target alignment: which encoder frame predicts which token (pure functions, checked against NeMo's modules)."""

import pytest
import torch

from nemo_streaming_ssl.receptive_field import ReceptiveField, same_index_frames, token_prediction_frames


def causal_encoder_length(mel_frames: int, factor: int = 8) -> int:
    """NeMo's causal striding length rule: T -> T//2 + 1 per stage."""
    for _ in range(factor.bit_length() - 1):
        mel_frames = mel_frames // 2 + 1
    return mel_frames


@pytest.mark.parametrize("subsampling", ["dw_striding", "striding"])
def test_causal_subsampling_span_matches_nemo(subsampling):
    """Perturbing mel frame m changes exactly the frames t with m in [8t-14, 8t], and lengths follow T//2+1."""
    from nemo.collections.asr.parts.submodules.subsampling import ConvSubsampling

    torch.manual_seed(0)
    sub = ConvSubsampling(subsampling, 8, feat_in=16, feat_out=8, conv_channels=4, is_causal=True).eval()
    field = ReceptiveField(subsampling_factor=8)
    num_mel = 61
    x = torch.randn(1, num_mel, 16)
    lengths = torch.tensor([num_mel])
    with torch.no_grad():
        base, out_len = sub(x, lengths)
        assert base.shape[1] == int(out_len) == causal_encoder_length(num_mel)
        frames = torch.arange(base.shape[1])
        first, last = field.subsampling_span_mel(frames)
        for m in range(num_mel):
            bumped = x.clone()
            bumped[:, m] += 1.0
            changed = (sub(bumped, lengths)[0] - base).abs().amax(dim=-1)[0] > 1e-6
            expected = (first <= m) & (m <= last)
            assert torch.equal(changed, expected), f"mel frame {m}"


def test_covering_frame_holds_the_whole_token():
    field = ReceptiveField(subsampling_factor=8)
    tokens = torch.arange(50)
    first, last = field.subsampling_span_mel(field.covering_frame(tokens))
    assert torch.all(first <= 8 * tokens) and torch.all(last >= 8 * tokens + 7)
    first, last = field.subsampling_span_mel(field.covering_frame(tokens) - 1)
    assert torch.all(last < 8 * tokens + 7)  # the frame before misses the token's end: covering is the first


@pytest.mark.parametrize("left, right", [(-1, 0), (-1, 1), (-1, 4), (320, 0), (10, 4), (6, 2)])
def test_chunked_prediction_frames(left, right):
    """Chunked: token k -> frame k+1, one token per frame, inside the first chunk that sees all of the token."""
    field = ReceptiveField(8, left, right, chunked=True, num_layers=3)
    tokens = torch.arange(40)
    frames = field.prediction_frame(tokens)
    assert torch.equal(frames, tokens + 1)
    assert torch.all(field.last_mel_frame(frames) >= 8 * tokens + 7)  # sees the whole token
    first_seeing = (frames // field.chunk_frames) * field.chunk_frames  # earliest frame with that receptive field
    assert torch.equal(field.last_mel_frame(first_seeing), field.last_mel_frame(frames))
    assert torch.all(field.last_mel_frame(first_seeing - 1) < 8 * tokens + 7)  # the chunk before does not


@pytest.mark.parametrize("right, layers", [(0, 1), (1, 2), (2, 3)])
def test_regular_prediction_frames_use_accumulated_lookahead(right, layers):
    field = ReceptiveField(8, -1, right, chunked=False, num_layers=layers)
    tokens = torch.arange(30)
    frames = field.prediction_frame(tokens)
    assert torch.equal(frames, tokens + 1 - right * layers)
    ok = frames >= 0
    assert torch.all(field.last_mel_frame(frames[ok]) >= 8 * tokens[ok] + 7)
    assert torch.all(field.last_mel_frame(frames[ok] - 1) < 8 * tokens[ok] + 7)  # earliest such frame


@pytest.mark.parametrize("mel_frames", [1, 7, 8, 9, 15, 16, 17, 53, 100, 203, 416])
@pytest.mark.parametrize("pair, chunked", [((-1, 0), True), ((-1, 4), True), ((320, 0), True), ((-1, 2), False)])
def test_token_prediction_frames_agree_with_lengths(mel_frames, pair, chunked):
    """Masks, tokens and encoder lengths agree: every valid token has a predicting frame within the encoder length."""
    field = ReceptiveField(8, *pair, chunked=chunked, num_layers=2)
    token_lengths = torch.tensor([mel_frames // 8, max(mel_frames - 9, 0) // 8])
    enc_lengths = torch.tensor([causal_encoder_length(mel_frames), causal_encoder_length(max(mel_frames - 9, 0))])
    frames, valid = token_prediction_frames(token_lengths, enc_lengths, mel_frames // 8, field)
    assert frames.shape == valid.shape == (2, mel_frames // 8)
    assert torch.all(frames < enc_lengths.unsqueeze(1)) and torch.all(frames >= 0)
    for b in range(2):
        k = torch.arange(mel_frames // 8)
        expected = (k < token_lengths[b]) & (field.prediction_frame(k) >= 0)
        assert torch.equal(valid[b], expected)  # causal 8x always has frame k+1 for every whole token
        assert torch.all(field.last_mel_frame(frames[b][valid[b]]) >= 8 * k[valid[b]] + 7)


def test_short_encoder_length_invalidates_tokens():
    field = ReceptiveField(8, -1, 0)
    frames, valid = token_prediction_frames(torch.tensor([5]), torch.tensor([3]), 5, field)
    assert valid.tolist() == [[True, True, False, False, False]]  # frames 1, 2 exist; 3.. do not
    assert frames.tolist() == [[1, 2, 0, 0, 0]]


def test_latency_properties():
    assert ReceptiveField(8, -1, 4).max_lookahead_frames == 4  # 320 ms
    assert ReceptiveField(8, -1, 4).min_lookahead_frames == 0
    assert ReceptiveField(8, -1, 4).chunk_frames == 5  # 400 ms
    assert ReceptiveField(8, -1, 2, chunked=False, num_layers=3).min_lookahead_frames == 6
    with pytest.raises(ValueError, match="lookahead_frames"):
        ReceptiveField(8, -1, -1)


def test_same_index_frames_are_the_token_index_within_both_lengths():
    """same_index: token k <- frame k, cut to the common length (hand-computed).

    Utterance 0: 45 mel frames -> 5 whole tokens, 7 encoder frames (45 -> 23 -> 12 -> 7): tokens 0..4 at frames 0..4.
    Utterance 1: 5 tokens but only 3 encoder frames: tokens 3, 4 have no frame of the same index.
    """
    frames, valid = same_index_frames(torch.tensor([5, 5]), torch.tensor([7, 3]), 6)
    assert frames.tolist() == [[0, 1, 2, 3, 4, 0], [0, 1, 2, 0, 0, 0]]
    assert valid.tolist() == [[True] * 5 + [False], [True, True, True, False, False, False]]
    # earliest_complete for the same causal utterance: one frame later (k+1), and token 4 needs frame 5 < 7
    causal, causal_valid = token_prediction_frames(torch.tensor([5]), torch.tensor([7]), 5, ReceptiveField(8, -1, 0))
    assert causal.tolist() == [[1, 2, 3, 4, 5]] and causal_valid.all()


def test_same_index_frame_sees_only_the_first_mel_frame_of_its_token():
    """Why same_index is an ablation for causal encoders: frame k ends at mel frame 8k, token k spans [8k, 8k+7]."""
    field = ReceptiveField(8, -1, 0)
    tokens = torch.arange(20)
    frames, _ = same_index_frames(torch.tensor([20]), torch.tensor([21]), 20)
    assert torch.equal(field.last_mel_frame(frames[0]), 8 * tokens)  # 7 of the token's 8 mel frames are unseen
