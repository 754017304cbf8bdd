"""Streamed encoder output == offline forward of the same model (max abs 1e-4), however audio is cut."""

from __future__ import annotations

import math

import pytest
import torch
from nemo.collections.asr.parts.preprocessing.features import FilterbankFeatures

from nemo_streaming_ssl.core.exactness import difference
from nemo_streaming_ssl.streaming import StreamingEncoderRunner, StreamingLogMel
from nemo_streaming_ssl.streaming.untrained import untrained_model
from tests.streaming_helpers import MODES, noise_audio, speech, stream

TOL = 1e-4
PIECES = {"10ms": 160, "37ms": 592, "whole": 10**9}


@pytest.fixture(scope="module")
def nemo_files(tmp_path_factory):
    """The tiny streaming models of every mode, built and saved once: {mode: path to .nemo}."""
    out = tmp_path_factory.mktemp("streaming_models")
    torch.manual_seed(0)
    paths = {}
    for mode, overrides in MODES.items():
        paths[mode] = out / f"{mode}.nemo"
        untrained_model(overrides).save_to(str(paths[mode]))
    return paths


@pytest.fixture(scope="module")
def models(nemo_files):
    from nemo.core import ModelPT

    return {mode: ModelPT.restore_from(str(path), map_location="cpu").eval() for mode, path in nemo_files.items()}


@pytest.fixture(scope="module")
def utterances(speech_corpus):
    return speech(speech_corpus, 3)


FEATURE_OPTIONS = {
    "nemo_default": {},  # centred STFT, add-guard log, power spectrum
    "clamp_20ms": {"n_window_size": 320, "log_zero_guard_type": "clamp"},
    "no_preemph": {"preemph": None, "mag_power": 1.0, "n_fft": 1024, "nfilt": 64},
}


@pytest.mark.parametrize(
    "options,piece",
    [("nemo_default", 1)] + [(o, p) for o in FEATURE_OPTIONS for p in (37, 160, 10**9)],
)
def test_features_equal_the_preprocessor(options, piece):
    """Mel frames equal NeMo's preprocessor on the whole signal, however the audio is cut."""
    args = dict(sample_rate=16000, n_window_size=400, n_window_stride=160, normalize="NA", pad_to=0, dither=0.0)
    featurizer = FilterbankFeatures(**{**args, **FEATURE_OPTIONS[options]}).eval()
    audio = noise_audio(0.6, seed=1)[: 8000 + 37]
    expected, length = featurizer(audio[None], torch.tensor([audio.numel()]))
    expected = expected[0, :, : int(length)]
    streamer = StreamingLogMel(featurizer)
    state = streamer.new_state()
    pieces = []
    for i in range(0, audio.numel(), piece):
        pieces.append(streamer.push(state, audio[i : i + piece]))
        assert state.next_frame == streamer.frames_ready(state.num_samples)
    pieces.append(streamer.finish(state))
    got = torch.cat(pieces, dim=1)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-4


@pytest.mark.parametrize("piece", list(PIECES), ids=list(PIECES))
@pytest.mark.parametrize("chunks", [1, 2, 3])
@pytest.mark.parametrize("mode", list(MODES))
def test_stream_equals_offline(models, utterances, mode, chunks, piece):
    """Every mode, chunks of 1-3 attention chunks, pieces of 10 ms, 37 ms and the whole file."""
    model = models[mode]
    runner = StreamingEncoderRunner(model, chunk_frames=chunks * (model.encoder.att_context_size[1] + 1), posteriors=True)
    for audio in utterances[:2]:
        expected = runner.offline(audio)
        frames, log_probs, outputs = stream(runner, audio, PIECES[piece])
        assert frames.shape == expected.frames.shape
        assert difference(frames, expected.frames).max_abs < TOL
        assert difference(log_probs, expected.log_probs).max_abs < TOL
        # frames arrive in order, numbered, and never more than one chunk per step
        assert [o.first_frame for o in outputs] == list(torch.cumsum(torch.tensor([0] + [len(o.frames) for o in outputs[:-1]]), 0))


@pytest.mark.parametrize("mode", list(MODES))
def test_every_layer_streams_as_offline(models, utterances, mode):
    """hidden_states=True: each layer's streamed frames equal NeMo's offline forward with hooks on its layers;
    [0] is what NeMo feeds layer 0 (the pre_encode output x sqrt(d_model)), [-1] the encoder output."""
    model = models[mode]
    runner = StreamingEncoderRunner(model, chunk_frames=2 * (model.encoder.att_context_size[1] + 1), hidden_states=True)
    audio = utterances[0]
    expected = runner.offline(audio)
    frames, _, outputs = stream(runner, audio, 592)
    hidden = torch.cat([o.hidden_states for o in outputs], dim=1)
    assert hidden.shape == (len(model.encoder.layers) + 1, *expected.frames.shape)
    assert difference(hidden, expected.hidden_states).max_abs < TOL
    assert torch.equal(hidden[-1], frames)
    with torch.inference_mode():
        mels, mel_lengths = runner.preprocessor(input_signal=audio[None], length=torch.tensor([audio.numel()]))
        subsampled, _ = runner.encoder.pre_encode(x=mels.transpose(1, 2), lengths=mel_lengths)
    assert runner.encoder.pos_enc.xscale == math.sqrt(model.cfg.encoder.d_model)
    assert difference(expected.hidden_states[0], runner.encoder.pos_enc.xscale * subsampled[0]).max_abs < TOL


def test_batch_of_streams_with_different_lengths_and_pieces(models, utterances):
    """Streams of different lengths, fed different piece sizes, ending at different times."""
    runner = StreamingEncoderRunner(models["left_context_lookahead"], chunk_frames=2)
    audios = [utterances[0], utterances[1][:7000], utterances[2], utterances[0][:300]]
    pieces = [160, 160, 1000, 50]  # streams 0 and 1 complete their chunks at the same pieces
    state = runner.new_state(len(audios), sample_rate=16000)
    got = [[] for _ in audios]
    position = [0] * len(audios)
    grouped = 0
    while not all(s.done for s in state.streams):
        batch, last = [], []
        for b, audio in enumerate(audios):
            batch.append(audio[position[b] : position[b] + pieces[b]])
            position[b] += pieces[b]
            last.append(position[b] >= audio.numel())
        for b, out in enumerate(runner.feed(state, batch, last=last)):
            got[b].append(out.frames)
        grouped = max([grouped] + [len(step.streams) for step in state.last_steps])
    for audio, frames in zip(audios, got):
        expected = runner.offline(audio).frames
        frames = torch.cat(frames)
        assert frames.shape == expected.shape
        assert difference(frames, expected).max_abs < TOL
    assert grouped >= 2  # streams ready together share one batched step


def feed_schedule(runner, audios, schedule):
    """Feed ``audios`` (one stream each) by ``schedule``: (seconds, streams fed) phases in 80 ms pieces
    (seconds: multiples of 0.08), then flush. Returns each stream's frames and the batched cache object of every feed."""
    state = runner.new_state(len(audios), sample_rate=16000)
    got, position, caches = [[] for _ in audios], [0] * len(audios), []
    for seconds, fed in schedule:
        for _ in range(round(seconds / 0.08)):
            pieces = [audio[position[b] : position[b] + 1280] if b in fed else None for b, audio in enumerate(audios)]
            for b in fed:
                position[b] += 1280
            for b, out in enumerate(runner.feed(state, pieces)):
                got[b].append(out.frames)
            caches.append(state.group_cache)
    for b, out in enumerate(runner.flush(state)):
        got[b].append(out.frames)
    return [torch.cat(frames) for frames in got], caches


def test_streams_in_lockstep_share_one_batched_cache(models):
    """Streams fed together in real time step as one batch on one batched cache, appended to in place
    (no per-step copy of every stream's cache), and each stays equal to its offline forward."""
    runner = StreamingEncoderRunner(models["left_context"])  # left context 16 frames: 1.3 s
    audios = [noise_audio(4.0, seed) for seed in range(3)]
    frames, caches = feed_schedule(runner, audios, [(4.0, {0, 1, 2})])
    steady = caches[len(caches) // 4 :]  # the cache filled up long before
    assert all(c is steady[0] for c in steady) and steady[0].members == [0, 1, 2]
    for audio, got in zip(audios, frames):
        assert (got - runner.offline(audio).frames).abs().max() < TOL


def test_batched_cache_is_rebuilt_after_streams_step_apart(models):
    """Two full caches (same frame counts) that changed apart must not reuse the batched copy of before."""
    runner = StreamingEncoderRunner(models["left_context"])
    audios = [noise_audio(4.96, seed) for seed in (3, 4)]  # what the schedule feeds each
    schedule = [(2.0, {0, 1}), (0.96, {0}), (0.96, {1}), (2.0, {0, 1})]  # apart, then together again
    frames, caches = feed_schedule(runner, audios, schedule)
    assert caches[24] is not caches[-1]  # the batched cache of the first phase was replaced
    for audio, got in zip(audios, frames):
        assert (got - runner.offline(audio).frames).abs().max() < TOL


def test_unlimited_left_context_slides_past_its_cache_without_crashing(models):
    """Left context -1 streams longer than its cache (here 12 frames, NeMo's pos_emb_max_len in real use):
    no crash, bounded cache, and the output is that of the same weights with a 12-frame left context."""
    model = models["causal"]
    runner = StreamingEncoderRunner(model, max_left_context_frames=12)
    audio = noise_audio(3.0)
    frames, _, _ = stream(runner, audio, 1280)  # one 80 ms chunk per piece: each step sees exactly the cache
    try:
        runner.encoder.set_default_att_context_size([12, 0])
        windowed = runner.offline(audio).frames
    finally:
        runner.encoder.set_default_att_context_size([-1, 0])
    unlimited = runner.offline(audio).frames
    assert frames.shape == windowed.shape
    assert difference(frames, windowed).max_abs < TOL
    assert difference(frames[:13], unlimited[:13]).max_abs < TOL  # exact while the stream fits in the cache
    assert (frames - unlimited).abs().max() > 1e-3  # ... and really windowed after that


def test_stream_longer_than_positional_table(tmp_path):
    """NeMo's own buffer crashes once cache + chunk pass pos_emb_max_len; ours extends the table."""
    model = untrained_model(MODES["causal"] + ["model.encoder.pos_emb_max_len=16"])
    runner = StreamingEncoderRunner(model, chunk_frames=4)
    audio = noise_audio(4.0)
    assert runner.att_cache_frames == 16
    frames, _, _ = stream(runner, audio, 4000)
    expected = runner.offline(audio).frames
    assert frames.shape == expected.shape
    assert difference(frames[:16], expected[:16]).max_abs < TOL


def test_multi_latency_model_streams_each_trained_pair(utterances):
    """A model trained with several [left, right] pairs streams exactly with whichever pair is chosen."""
    model = untrained_model(["preset=tiny", "mode=multi_latency"])
    audio = utterances[1]
    for pair, chunk_ms in (([-1, 1], 160), ([-1, 4], 800)):
        runner = StreamingEncoderRunner(model, att_context_size=pair, chunk_ms=chunk_ms)
        assert runner.latency.algorithmic_latency_ms == chunk_ms + 12.5
        frames, _, _ = stream(runner, audio, 592)
        expected = runner.offline(audio).frames
        assert frames.shape == expected.shape and difference(frames, expected).max_abs < TOL


def test_runners_leave_the_callers_model_alone(utterances):
    """Two runners of different attention contexts on one model: each streams and runs offline() with its own
    context, and the caller's model keeps its classes, weight layout, default context and forward."""
    torch.manual_seed(0)
    model = untrained_model(["preset=tiny", "mode=causal", "model.encoder.att_context_size=[[10,0],[10,4]]"])
    model.train()
    audio = utterances[1]
    features, length = model.preprocessor(input_signal=audio[None], length=torch.tensor([audio.numel()]))
    classes = {name: type(m) for name, m in model.named_modules()}
    strides = {name: p.stride() for name, p in model.named_parameters()}
    model.eval()
    with torch.no_grad():
        own_before, _ = model.encoder(audio_signal=features, length=length)
    model.train()

    runner_a = StreamingEncoderRunner(model, att_context_size=[10, 0])
    offline_a = runner_a.offline(audio).frames
    runner_b = StreamingEncoderRunner(model, att_context_size=[10, 4])
    offline_b = runner_b.offline(audio).frames
    assert (offline_a - offline_b).abs().max() > 1e-2  # the two contexts really differ

    assert (runner_a.offline(audio).frames - offline_a).abs().max() == 0  # A keeps its own context
    for runner, offline in ((runner_a, offline_a), (runner_b, offline_b)):
        frames, _, _ = stream(runner, audio, 592)
        assert frames.shape == offline.shape and difference(frames, offline).max_abs < TOL

    assert model.training  # not switched to eval behind the caller's back
    assert list(model.encoder.att_context_size) == [10, 0]
    assert {name: type(m) for name, m in model.named_modules()} == classes
    assert {name: p.stride() for name, p in model.named_parameters()} == strides
    model.eval()
    with torch.no_grad():
        own_after, _ = model.encoder(audio_signal=features, length=length)
    assert torch.equal(own_after, own_before)
