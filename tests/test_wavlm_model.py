"""Streaming WavLM model: frame counts, exact streaming for any piece size, bounded state, batching, causality."""

from __future__ import annotations

import math

import pytest
import soundfile as sf
import torch

from nemo_streaming_ssl.data.manifest import read_manifest
from nemo_streaming_ssl.core.protocol import join
from s3prl_upstream.wavlm import StreamingWavLM, StreamingWavLMConfig

from .wavlm_helpers import relative_error, stream_all, tiny_model

HOP = 320
BLOCK = 4  # lookahead 3 + 1


@pytest.fixture(scope="module")
def model() -> StreamingWavLM:
    return tiny_model()


@pytest.fixture(scope="module")
def wav() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3 * 16000 + 77)  # 3 s: 151 frames, ~10 windows of 16 frames


@pytest.fixture(scope="module")
def one_shot(model, wav) -> list[torch.Tensor]:
    with torch.no_grad():
        hidden, lengths = model(wav)
    assert lengths.tolist() == [151, 151]
    return hidden


def test_default_config_is_the_reference_architecture():
    cfg = StreamingWavLMConfig()
    assert (cfg.num_layers, cfg.dim, cfg.ffn_dim, cfg.num_heads, cfg.window_size, cfg.lookahead_size, cfg.causal) == (
        12, 1024, 4096, 16, 512, 3, True)
    assert (cfg.hop_samples, cfg.receptive_field_samples, cfg.block_frames) == (320, 400, 4)


@pytest.mark.parametrize("samples", [0, 1, 319, 320, 321, 1280, 1281, 16005])
def test_causal_frame_count_is_ceil(model, samples):
    with torch.no_grad():
        hidden, lengths = model(torch.randn(1, samples))
    frames = math.ceil(samples / HOP)
    assert len(hidden) == 2 and lengths.tolist() == [frames]
    assert all(h.shape == (1, frames, 64) for h in hidden)
    assert all(torch.isfinite(h).all() for h in hidden)


@pytest.mark.parametrize("pieces", [[37], [HOP], [999], [BLOCK * HOP], [3200], [6400], [16000], [10**7],
                                    [0, 5, 1, 2000, 333, 4800, 7]], ids=lambda p: "+".join(map(str, p)))
def test_streaming_equals_one_shot(model, wav, one_shot, pieces):
    streamed, max_cache = stream_all(model, wav, pieces)
    for layer, (s, o) in enumerate(zip(streamed, one_shot)):
        assert s.shape == o.shape, f"layer {layer}"
        err, worst = relative_error(s, o), float((s - o).abs().max())
        assert err < 1e-4 and worst < 1e-3, f"layer {layer}: relative {err:.2e}, max abs {worst:.2e}"
    assert max_cache == model.config.window_size - 1


def test_streaming_one_sample_at_a_time(model):
    torch.manual_seed(2)
    wav = torch.randn(1, 4801)  # 16 frames: 4 blocks, the last one partial
    with torch.no_grad():
        one_shot, _ = model(wav)
    streamed, _ = stream_all(model, wav, [1])
    assert all(relative_error(s, o) < 1e-4 for s, o in zip(streamed, one_shot))


def test_blocks_are_emitted_as_soon_as_complete_and_state_stays_bounded(model, wav):
    cfg = model.config
    state = model.new_state(2, sample_rate=16000)
    emitted = 0
    for start in range(0, 2 * 16000, 211):
        new = model.feed(state, wav[:, start : start + 211])
        assert [out.first_frame for out in new] == [emitted] * 2
        emitted += new[0].frames.shape[0]
        seen = min(start + 211, wav.shape[1])
        # A block is final once its last frame exists: frame t ends at sample 320 t.
        assert emitted == (math.ceil(seen / HOP) // BLOCK) * BLOCK
        assert new[0].frames.shape[0] % BLOCK == 0 and state.frames_emitted == emitted
        assert new[1].hidden_states.shape == (cfg.num_layers, new[0].frames.shape[0], cfg.dim)
        assert state.kv_cache_frames <= cfg.window_size - 1
        assert state.frame_buffer.shape[1] < BLOCK and state.sample_buffer.shape[1] < BLOCK * HOP
        assert all(p is None or p.shape[1] < 2 * k for p, k in zip(state.conv_pending, cfg.kernel_sizes))
        assert state.pos_pending is None or state.pos_pending.shape[1] == cfg.conv_pos - 1
    tail = model.flush(state)
    assert tail[0].frames.shape[0] == math.ceil(seen / HOP) - emitted
    with pytest.raises(ValueError, match="flushed"):
        model.feed(state, wav[:, :10])


def test_causality(model, wav):
    """Changing samples from tau on leaves every block whose last frame ends before tau unchanged."""
    tau = 16000 + 123
    changed = wav.clone()
    changed[:, tau:] += torch.randn_like(changed[:, tau:])
    with torch.no_grad():
        a, _ = model(wav)
        b, _ = model(changed)
    last_frame = (tau - 1) // HOP  # frames t with 320 t < tau see only unchanged samples
    safe = (last_frame + 1) // BLOCK * BLOCK  # whole blocks made of such frames
    for x, y in zip(a, b):
        assert torch.allclose(x[:, :safe], y[:, :safe], atol=1e-6, rtol=0)
        assert not torch.allclose(x[:, safe : safe + BLOCK], y[:, safe : safe + BLOCK], atol=1e-3)


def _read_utterances(manifest, count):
    return [torch.from_numpy(sf.read(e.audio_filepath, dtype="float32")[0]) for e in read_manifest(manifest)[:count]]


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "noncausal"])
def test_padded_batch_equals_each_utterance_alone(speech_corpus, causal):
    model = tiny_model(causal=causal)
    utterances = _read_utterances(speech_corpus["train"], 3)
    utterances += [utterances[0][:1000], utterances[1][:150], torch.zeros(0)]  # partial block, < receptive field, empty
    lengths = torch.tensor([len(u) for u in utterances])
    batch = torch.randn(len(utterances), int(lengths.max()))  # padding content must not matter
    for i, u in enumerate(utterances):
        batch[i, : len(u)] = u
    with torch.no_grad():
        hidden, frame_lengths = model(batch, lengths)
        for i, u in enumerate(utterances):
            alone, alone_lengths = model(u[None])
            t = int(frame_lengths[i])
            assert t == int(alone_lengths[0]) == alone[0].shape[1]
            for layer, (h, a) in enumerate(zip(hidden, alone)):
                assert torch.isfinite(h).all()
                if t:
                    assert relative_error(h[i, :t], a[0]) < 1e-5, f"utterance {i} layer {layer}"
                assert h[i, t:].abs().max() == 0 if h.shape[1] > t else True


def test_noncausal_mode_matches_wavlm_framing_and_refuses_streaming():
    model = tiny_model(causal=False)
    with torch.no_grad():
        for samples, frames in [(16000, 49), (400, 1), (399, 1), (719, 1), (720, 2), (0, 0)]:
            hidden, lengths = model(torch.randn(1, samples))
            assert lengths.tolist() == [frames] and hidden[0].shape[1] == frames
    with pytest.raises(ValueError, match="non-causal"):
        model.new_state(1, sample_rate=16000)


def test_noncausal_sees_the_future():
    model = tiny_model(causal=False)
    wav = torch.randn(1, 8000)
    changed = wav.clone()
    changed[:, 6000:] = 0
    with torch.no_grad():
        a, _ = model(wav)
        b, _ = model(changed)
    assert not torch.allclose(a[-1][:, :4], b[-1][:, :4], atol=1e-4)


def test_one_shot_is_differentiable_and_trains_in_train_mode():
    model = tiny_model(dropout=0.1).train()
    hidden, _ = model(torch.randn(2, 4000), torch.tensor([4000, 2500]))
    sum(h.pow(2).mean() for h in hidden).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_positional_conv_matmul_path_equals_conv1d(model):
    """Small inputs (batch x frames <= SMALL_INPUT_FRAMES) take a batched-matmul path (faster than oneDNN's
    grouped conv); both must agree."""
    pos = model.encoder.positional_embedding
    for frames in (1, 5, pos.SMALL_INPUT_FRAMES // 2):
        x = torch.randn(2, frames + pos.conv.kernel_size[0] - 1, model.config.dim)
        with torch.no_grad():
            expected = pos.conv(x.transpose(1, 2)).transpose(1, 2)
            assert torch.allclose(pos._valid_conv(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk_ms", [20, 80, 200])
def test_latency_definition_matches_real_emission(model, wav, chunk_ms):
    """The latency the benchmark and docs quote (nemo_streaming_ssl.core.latency, the one definition of both
    models) is what feed() really does: for every sample, the wait from its recording to the end of the call
    that emits the first frame seeing it (frame ceil(n / 320))."""
    chunk = chunk_ms * 16
    state, emitted_after = model.new_state(2, sample_rate=16000), []
    for start in range(0, 32000, chunk):
        model.feed(state, wav[:, start : start + chunk])
        emitted_after.append(state.frames_emitted)
    emitted_after = torch.tensor(emitted_after)
    samples = torch.arange(32000 - 1600)  # leave the tail out: its frames are emitted only by flush()
    first_frame = (samples + HOP - 1) // HOP
    call = torch.searchsorted(emitted_after, first_frame, right=True)  # first call after which it is out
    worst = int(((call + 1) * chunk - samples).max())
    assert worst / 16 == model.timing.worst_wait_ms(chunk)
    if chunk_ms == 20:  # sample by sample it is one block; 20 ms pieces add one piece (less one sample)
        assert model.latency.algorithmic_latency_ms == 80 and worst == 5 * HOP - 1


def test_flush_ends_rows_of_different_lengths_together(model):
    """flush(state, piece, valid_samples): each row stops at its own length, even before the piece (15500) or
    a window past its start (22222); its frames equal the utterance alone, padding content never matters."""
    torch.manual_seed(3)
    lengths = [15500, 16000, 16001, 17000, 22222]
    batch = torch.randn(len(lengths), max(lengths))  # the padding past each length is noise, not zeros
    state = model.new_state(len(lengths), sample_rate=16000)
    calls = [model.feed(state, batch[:, start : min(start + 5333, 16000)]) for start in range(0, 16000, 5333)]
    calls.append(model.feed(state, batch[:, 16000:], last=True, valid_samples=torch.tensor(lengths)))
    streamed = join(calls)
    for i, length in enumerate(lengths):
        with torch.no_grad():
            alone, _ = model(batch[i : i + 1, :length])
        frames = alone[0].shape[1]
        assert streamed[i].hidden_states.shape[1] == frames  # each row stops at its own length
        for layer, (s, a) in enumerate(zip(streamed[i].hidden_states, alone)):
            assert relative_error(s, a[0]) < 1e-4, f"row {i} layer {layer}"


@pytest.mark.parametrize("length", [15040, 16001])
def test_flush_refuses_lengths_outside_what_was_emitted_and_seen(model, wav, length):
    """After 16000 samples 48 frames are out: a row needs 48 frames (15041 samples or more), and it cannot be
    longer than the samples seen."""
    state = model.new_state(2, sample_rate=16000)
    model.feed(state, wav[:, :16000])
    with pytest.raises(ValueError, match=r"valid_samples must be \[2\] lengths in \[15041, 16000\]"):
        model.flush(state, valid_samples=torch.tensor([16000, length]))


def test_feed_takes_the_shared_piece_forms_and_refuses_the_others(model, wav):
    """Pieces as [B, s], as B equal 1-D pieces, or one 1-D piece for one stream give the same frames; the
    streams of a state advance and end together, so unequal pieces or mixed end flags are refused by name."""
    as_tensor = model.new_state(2, sample_rate=16000)
    as_list = model.new_state(2, sample_rate=16000)
    got_tensor = model.feed(as_tensor, wav[:, :3000])
    got_list = model.feed(as_list, [wav[0, :3000], wav[1, :3000]])
    assert all(torch.equal(a.hidden_states, b.hidden_states) for a, b in zip(got_tensor, got_list))
    one = model.new_state(1, sample_rate=16000)
    assert relative_error(model.feed(one, wav[0, :3000])[0].frames, got_tensor[0].frames) < 1e-5
    with pytest.raises(ValueError, match="equal length"):
        model.feed(as_list, [wav[0, :10], wav[1, :20]])
    with pytest.raises(ValueError, match="end together"):
        model.feed(as_list, wav[:, 3000:3100], last=[True, False])
    with pytest.raises(ValueError, match="with last=True"):
        model.feed(as_list, wav[:, 3000:3100], valid_samples=torch.tensor([3050, 3100]))
    with pytest.raises(ValueError, match="expects 16000 Hz"):
        model.new_state(1, sample_rate=8000)
