"""StreamingNESTModel: shapes for any length, exact causality, batch independence, save/restore, multi-latency."""

import random

import pytest
import torch

from nemo_streaming_ssl.models import StreamingNESTModel
from nemo_streaming_ssl.receptive_field import ReceptiveField, token_prediction_frames

from .nest_support import model_config

SAMPLE_RATE, HOP, N_FFT = 16000, 160, 512
MODES = {
    "causal": ["mode=causal"],
    "lookahead": ["mode=lookahead"],
    "left_context": ["mode=left_context"],
    "left_context_8": ["model.encoder.att_context_size=[8,0]"],  # short enough to bind in these inputs
}


@pytest.fixture(scope="module")
def models() -> dict[str, StreamingNESTModel]:
    torch.manual_seed(0)
    return {name: StreamingNESTModel(model_config(*overrides)).eval() for name, overrides in MODES.items()}


def encode(model, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S) audio -> (B, D, T) encoder output and (B,) lengths, in eval mode."""
    with torch.no_grad():
        feats, feat_len = model.preprocessor(input_signal=audio, length=lengths)
        return model.encoder(audio_signal=feats, length=feat_len)


def test_any_length_and_context_gives_aligned_outputs():
    """T need not be a multiple of 8; tokens, scored masks and aligned log-probs agree for every context."""
    torch.manual_seed(1)
    for overrides in (["mode=causal"], ["mode=lookahead"], ["mode=multi_latency"], ["model.encoder.att_context_size=[6,2]"]):
        model = StreamingNESTModel(model_config(*overrides)).train()
        for samples in (8000, 8160, 9999, 12345):
            lengths = torch.tensor([samples, samples - 1234, samples - 2345])
            audio = torch.randn(3, samples) * 0.1
            log_probs, enc_len, masks, tokens = model(
                input_signal=audio, input_signal_length=lengths, noisy_input_signal=audio,
                noisy_input_signal_length=lengths, apply_mask=True,
            )
            num_tokens = (samples // HOP) // 8
            assert tokens.shape[:2] == log_probs.shape[:2] == (3, num_tokens)
            assert masks.shape == (3, 80, 8 * num_tokens)
            assert torch.isfinite(model.loss(masks=masks, decoder_outputs=log_probs, targets=tokens, decoder_lengths=enc_len))


@pytest.mark.parametrize("mode", list(MODES))
def test_encoder_is_exactly_causal_in_features(models, mode):
    """Perturbing mel frames >= m leaves every frame whose receptive field ends before m unchanged."""
    model = models[mode]
    field = model.receptive_field()
    torch.manual_seed(2)
    feats, length = torch.randn(1, 80, 203), torch.tensor([203])
    with torch.no_grad():
        base, enc_len = model.encoder(audio_signal=feats, length=length)
        last_mel = field.last_mel_frame(torch.arange(base.shape[-1]))
        for start in (40, 97, 150):
            bumped = feats.clone()
            bumped[:, :, start:] += torch.randn_like(bumped[:, :, start:])
            diff = (model.encoder(audio_signal=bumped, length=length)[0] - base).abs().amax(dim=1)[0]
            assert diff[last_mel < start].max() <= 1e-6
            assert diff[last_mel >= start].max() > 1e-3  # the future does matter: the test can fail


@pytest.mark.parametrize("mode", list(MODES))
def test_encoder_is_exactly_causal_in_audio(models, mode):
    """Perturbing samples >= s leaves unchanged every frame whose last mel frame's STFT window ends before s."""
    model = models[mode]
    field = model.receptive_field()
    torch.manual_seed(3)
    audio, length = torch.randn(1, 20000) * 0.1, torch.tensor([20000])
    base, _ = encode(model, audio, length)
    last_sample = HOP * field.last_mel_frame(torch.arange(base.shape[-1])) + N_FFT // 2 - 1
    for start in (7777, 12345, 17000):
        bumped = audio.clone()
        bumped[:, start:] += torch.randn_like(bumped[:, start:]) * 0.1
        diff = (encode(model, bumped, length)[0] - base).abs().amax(dim=1)[0]
        assert diff[last_sample < start].max() <= 1e-6
        assert diff[last_sample >= start].max() > 1e-3


@pytest.mark.parametrize("mode", ["causal", "lookahead"])
def test_utterance_alone_equals_utterance_in_padded_batch(models, mode):
    model = models[mode]
    torch.manual_seed(4)
    lengths = torch.tensor([21000, 33600, 27000])
    audio = torch.randn(3, 33600) * 0.1
    audio[0, 21000:] = 0.0
    batch_out, batch_len = encode(model, audio, lengths)
    alone_out, alone_len = encode(model, audio[:1, :21000], lengths[:1])
    assert int(batch_len[0]) == int(alone_len[0]) == alone_out.shape[-1]
    assert torch.allclose(batch_out[0, :, : alone_out.shape[-1]], alone_out[0], atol=1e-5, rtol=0)


def test_nemo_save_restore_gives_identical_outputs(models, tmp_path):
    from nemo.core import ModelPT

    model = models["lookahead"]
    path = tmp_path / "streaming_nest.nemo"
    model.save_to(str(path))
    restored = ModelPT.restore_from(str(path), map_location="cpu").eval()
    assert type(restored) is StreamingNESTModel and restored.cfg.target.endswith("StreamingNESTModel")
    torch.manual_seed(5)
    audio, lengths = torch.randn(2, 17000) * 0.1, torch.tensor([17000, 15000])
    assert torch.equal(encode(model, audio, lengths)[0], encode(restored, audio, lengths)[0])
    with torch.no_grad():
        args = dict(input_signal=audio, input_signal_length=lengths, noisy_input_signal=audio, noisy_input_signal_length=lengths)
        assert all(torch.equal(a, b) for a, b in zip(model(**args), restored(**args)))


def test_alignment_uses_the_pair_drawn_for_the_batch():
    """Regular attention: lookahead 0 or 2 frames per layer (2 layers), so the predicting frame moves with the pair."""
    model = StreamingNESTModel(
        model_config(
            "model.encoder.att_context_style=regular",
            "model.encoder.att_context_size=[[-1,0],[-1,2]]",
            "model.encoder.dropout=0.0",
            "model.encoder.dropout_pre_encoder=0.0",
            "model.encoder.dropout_att=0.0",
            "model.preprocessor.dither=0.0",
        )
    )
    random.seed(0)  # NeMo draws the pair with Python's random
    torch.manual_seed(6)
    audio, lengths = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 12000])
    args = dict(input_signal=audio, input_signal_length=lengths, noisy_input_signal=audio, noisy_input_signal_length=lengths)
    drawn = set()
    for _ in range(12):
        model.train()
        with torch.no_grad():
            log_probs, _, _, tokens = model(**args)
        pair = model.encoder.current_att_context_size
        drawn.add(tuple(pair))
        # Reference: the same encoder with that pair fixed, per-frame log-probs gathered at the expected frames.
        model.eval()
        model.encoder.set_default_att_context_size(pair)
        encoded, enc_len = encode(model, audio, lengths)
        with torch.no_grad():
            frame_log_probs = model.decoder(encoder_output=encoded)
        field = ReceptiveField.from_att_context(pair, "regular", 8, model.encoder.n_layers)
        frames, valid = token_prediction_frames((lengths // HOP) // 8, enc_len, tokens.shape[1], field)
        expected = torch.stack([frame_log_probs[b, frames[b]] for b in range(2)])
        assert valid.any() and torch.allclose(log_probs[valid], expected[valid], atol=1e-5)
        if pair == [-1, 2]:  # frames of the other pair would give other predictions
            other, _ = token_prediction_frames((lengths // HOP) // 8, enc_len, tokens.shape[1], ReceptiveField(8, -1, 0, False, 2))
            shifted = torch.stack([frame_log_probs[b, other[b]] for b in range(2)])
            assert not torch.allclose(log_probs[valid], shifted[valid], atol=1e-3)
        model.encoder.set_default_att_context_size([-1, 0])
    assert drawn == {(-1, 0), (-1, 2)}


def align_example(model, encoded_frames: int):
    """align_to_tokens on 6 tokens of 8 mel frames (+3): token 0 fully masked, token 1 partly, tokens 4 and 5
    fully. -> (per-frame log_probs (1, 7, 10, 1), aligned per-token log_probs, scored masks, scored per token)."""
    num_tokens, steps = 6, 8
    masks = torch.zeros(1, 80, num_tokens * steps + 3)
    masks[:, :, 0:8] = 1.0
    masks[:, :, 8:14] = 1.0
    masks[:, :, 32:48] = 1.0
    log_probs = torch.randn(1, 7, 10, 1).log_softmax(2)
    tokens = torch.zeros(1, num_tokens, 1, dtype=torch.long)
    aligned, _, scored_masks, _ = model.align_to_tokens(
        log_probs, torch.tensor([encoded_frames]), masks, tokens, feat_lengths=torch.tensor([num_tokens * steps + 3])
    )
    return log_probs, aligned, scored_masks, (scored_masks[0, 0].view(num_tokens, steps).amin(1) > 0).tolist()


def test_only_fully_masked_predictable_tokens_are_scored(models):
    """align_to_tokens keeps a token only if all its mel frames are masked and a frame predicts it: token 1 is
    partly masked; token 5 has no predicting frame with 6 encoder frames."""
    log_probs, aligned, _, scored = align_example(models["causal"], encoded_frames=6)
    assert scored == [True, False, False, False, True, False]
    assert torch.equal(aligned[0, :5], log_probs[0, 1:6])  # token k <- frame k+1 (causal)


def test_same_index_alignment_scores_token_k_at_frame_k():
    """model.target_alignment=same_index: outputs cut to the tokens, token k <- frame k, same scoring rule
    (frame 5 is beyond 5 encoder frames: token 5 is not scored)."""
    model = StreamingNESTModel(model_config("model.target_alignment=same_index")).eval()
    log_probs, aligned, scored_masks, scored = align_example(model, encoded_frames=5)
    assert scored == [True, False, False, False, True, False]
    assert torch.equal(aligned[0, :5], log_probs[0, :5])  # token k <- frame k: the first K frames
    assert aligned.shape[1] == 6 and scored_masks.shape[-1] == 6 * 8


def test_loss_is_zero_not_nan_without_scored_tokens(models):
    model = models["causal"]
    audio, lengths = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 9000])
    with torch.no_grad():
        log_probs, enc_len, masks, tokens = model(
            input_signal=audio, input_signal_length=lengths, noisy_input_signal=audio,
            noisy_input_signal_length=lengths, apply_mask=False,
        )
        loss = model.loss(masks=masks, decoder_outputs=log_probs, targets=tokens, decoder_lengths=enc_len)
    assert masks.sum() == 0 and loss.item() == 0.0


def test_noisy_utterance_keeps_the_clean_length(models):
    """NeMo's augmentor may report the noise file's (shorter) length as the noisy length: the model ignores it."""
    model = models["causal"]
    audio, lengths = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 12000])
    clean = dict(input_signal=audio, input_signal_length=lengths, noisy_input_signal=audio)
    with torch.no_grad():
        full = model(**clean, noisy_input_signal_length=lengths)
        cut = model(**clean, noisy_input_signal_length=lengths // 2)
    assert torch.equal(full[1], cut[1]) and torch.equal(full[0], cut[0])
