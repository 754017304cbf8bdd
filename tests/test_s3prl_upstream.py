"""The streaming WavLM as an s3prl upstream, in this process: s3prl's upstream contract, chunk exactness of
every hub entry on a padded batch, s3prl's Featurizer and S3PRLUpstream, and the errors users will meet."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from s3prl_upstream import hubconf
from s3prl_upstream.expert import TASK_KEYS
from s3prl_upstream.wavlm import CheckpointError, ModelConfigError, load_streaming_wavlm
from s3prl_upstream.wavlm.checkpoint import TRUST_PICKLE_ENV
from tests.s3prl_support import TINY_MODEL, save_tiny_checkpoint, write_model_config
from tests.wavlm_helpers import TrainingNote

NUM_LAYERS, DIM, HOP = TINY_MODEL["wavlm"]["num_layers"], TINY_MODEL["wavlm"]["dim"], 320
# Lengths (samples) that cut frames, blocks (4 frames) and chunks anywhere; 800 = 0.05 s, s3prl's shortest test input.
LENGTHS = (16123, 7777, 12345, 2565, 800)
TOLERANCE = 1e-4  # max |difference| relative to max |reference|, per utterance and layer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return str(save_tiny_checkpoint(tmp_path_factory.mktemp("s3prl_ckpt") / "tiny.pt"))


@pytest.fixture(scope="module")
def wavs() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return [0.1 * torch.randn(n, generator=generator) for n in LENGTHS]


@pytest.fixture(scope="module")
def reference(ckpt, wavs) -> list[list[torch.Tensor]]:
    """Per utterance, alone, the model's one-shot forward: per layer [T, D]."""
    model = load_streaming_wavlm(ckpt)
    with torch.no_grad():
        return [[layer[0] for layer in model(wav[None])[0]] for wav in wavs]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max()).item()


def assert_each_utterance_alone(hidden: list[torch.Tensor], alone: list[list[torch.Tensor]], lengths, label) -> None:
    """hidden: per layer [B, T, D] of a padded batch, T = ceil(max length / 320); alone: per utterance, per
    layer [T_b, D]. Each row's frames equal its utterance alone, and are zero past its end."""
    assert len(hidden) == NUM_LAYERS
    frames = math.ceil(max(lengths) / HOP)
    for b, length in enumerate(lengths):
        valid = math.ceil(length / HOP)
        for layer in range(NUM_LAYERS):
            assert hidden[layer].shape == (len(lengths), frames, DIM)
            assert relative_error(hidden[layer][b, :valid], alone[b][layer]) < TOLERANCE, (label, b, layer)
            assert not hidden[layer][b, valid:].any()  # zeros past the end


@pytest.mark.parametrize("name, overrides", [(name, {}) for name in hubconf.WAVLM_ENTRIES]
                         + [("streaming_wavlm", {"chunk_ms": 30})])  # 480 samples: not even a whole frame
def test_every_entry_streams_the_one_shot_features_of_each_utterance(name, overrides, ckpt, wavs, reference):
    upstream = hubconf.WAVLM_ENTRIES[name](ckpt=ckpt, **overrides)
    with torch.no_grad():  # the streaming path (s3prl runs frozen upstreams under no_grad)
        hidden = upstream(wavs)["hidden_states"]
    assert_each_utterance_alone(hidden, reference, LENGTHS, name)


@pytest.mark.parametrize("chunk_ms, lengths", [
    (400, (16000, 15000, 13001, 12801)),  # 6400-sample chunks: every row ends in the third chunk
    (375, (16000, 15000, 13001, 12001)),  # 6000 samples, not a whole number of 320-sample frames: the same
    (400, (12800, 16000, 6400, 6401, 800)),  # rows ending on chunk boundaries, three ending chunks
    (30, LENGTHS),  # 480 samples: five rows ending in five chunks
], ids=["same-chunk", "same-chunk-uneven", "boundaries", "each-own-chunk"])
def test_rows_ending_in_the_same_chunk_flush_together(monkeypatch, ckpt, chunk_ms, lengths):
    """One last feed per chunk in which rows end, however many rows end there and whatever their lengths (a flush
    per row made SUPERB's keyword spotting several times slower), and each row still its utterance alone."""
    upstream = hubconf.streaming_wavlm(ckpt=ckpt, chunk_ms=chunk_ms)
    calls = Counter()

    def counted(*args, _feed=upstream.model.feed, **kwargs):  # count the calls; the real feed still does the work
        calls["last" if kwargs.get("last") else "feed"] += 1
        return _feed(*args, **kwargs)

    monkeypatch.setattr(upstream.model, "feed", counted)
    generator = torch.Generator().manual_seed(11)
    wavs = [0.1 * torch.randn(n, generator=generator) for n in lengths]
    with torch.no_grad():
        hidden = upstream(wavs)["hidden_states"]
        alone = [[layer[0] for layer in upstream.model(wav[None])[0]] for wav in wavs]
    chunk_samples = chunk_ms * 16
    ending_chunks = {math.ceil(n / chunk_samples) - 1 for n in lengths}  # chunk k holds samples up to (k + 1) * chunk
    assert calls == {"last": len(ending_chunks), "feed": max(ending_chunks)}
    assert_each_utterance_alone(hidden, alone, lengths, chunk_ms)


def test_output_keys_and_downsample_rate(ckpt, wavs):
    upstream = hubconf.streaming_wavlm_400ms(ckpt=ckpt)
    with torch.no_grad():
        out = upstream(wavs)
    assert out["last_hidden_state"] is out["hidden_states"][-1]
    for key in TASK_KEYS:
        assert out[key] is out["hidden_states"]
    for key in ("hidden_states", "last_hidden_state", *TASK_KEYS):
        assert upstream.get_downsample_rates(key) == HOP


def test_deterministic_in_eval(ckpt, wavs):
    upstream = hubconf.streaming_wavlm_200ms(ckpt=ckpt).eval()
    with torch.no_grad():
        first, second = upstream(wavs)["hidden_states"], upstream(wavs)["hidden_states"]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_gradient_path_matches_streaming_and_backpropagates(ckpt):
    """With gradients on (run_downstream.py -f) the expert runs the one-shot forward: same features, and
    backward reaches every parameter. Inputs of 0.05 s and less, as in s3prl's upstream tests."""
    upstream = hubconf.streaming_wavlm(ckpt=ckpt).eval()
    wavs = [torch.randn(800), torch.randn(700)]
    with torch.no_grad():
        streamed = upstream(wavs)["hidden_states"]
    one_shot = upstream(wavs)["hidden_states"]
    for got, want in zip(one_shot, streamed):
        assert got.shape == (2, 3, DIM)
        assert relative_error(got, want) < TOLERANCE

    upstream.train()
    hidden = upstream(wavs)["hidden_states"]
    assert len(hidden) == NUM_LAYERS and all(h.shape == (2, 3, DIM) for h in hidden)
    sum(h.mean() for h in hidden).backward()
    no_grad = [n for n, p in upstream.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"no gradient reached {no_grad}"


def test_layer_count_is_the_same_in_train_and_eval(ckpt):
    """Training with gradients (s3prl -f: the one-shot forward) and frozen eval (the streaming path) give the
    same number of hidden states."""
    upstream = hubconf.streaming_wavlm(ckpt=ckpt)
    wavs = [torch.randn(1600)]
    counts = []
    for train in (True, False, True):
        upstream.train(train)
        with torch.set_grad_enabled(train):
            counts.append(len(upstream(wavs)["hidden_states"]))
    assert counts == [NUM_LAYERS] * 3


@pytest.mark.s3prl
def test_s3prl_featurizer_weights_the_layers(ckpt, wavs):
    from s3prl.upstream.interfaces import Featurizer

    upstream = hubconf.streaming_wavlm_400ms(ckpt=ckpt)
    featurizer = Featurizer(upstream, upstream_device="cpu")
    assert (featurizer.output_dim, featurizer.downsample_rate, featurizer.layer_num) == (DIM, HOP, NUM_LAYERS)
    with torch.no_grad():
        features = featurizer(wavs, upstream(wavs))
    assert [tuple(f.shape) for f in features] == [(round(n / HOP), DIM) for n in LENGTHS]


@pytest.mark.s3prl
def test_s3prl_nn_upstream_wrapper(ckpt, wavs):
    from s3prl.nn import S3PRLUpstream

    from s3prl_upstream.registration import register

    register()  # this pytest process may not carry the .pth hook
    upstream = S3PRLUpstream("streaming_wavlm_1000ms", path_or_url=ckpt).eval()
    assert upstream.num_layers == NUM_LAYERS and upstream.downsample_rates == [HOP] * NUM_LAYERS
    padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    with torch.no_grad():
        hidden, lengths = upstream(padded, torch.tensor(LENGTHS))
    assert lengths[0].tolist() == [math.ceil(n / HOP) for n in LENGTHS]
    assert hidden[0].shape == (len(LENGTHS), math.ceil(max(LENGTHS) / HOP), DIM)


def test_model_config_yaml_with_a_bare_state_dict(tmp_path, ckpt, wavs):
    """-g model.yaml + -k weights.pt (no embedded config) gives the same upstream as the self-describing file."""
    bare = save_tiny_checkpoint(tmp_path / "bare.pt", embed_config=False)
    config = write_model_config(tmp_path / "model.yaml")
    with torch.no_grad():
        from_yaml = hubconf.streaming_wavlm(ckpt=str(bare), model_config=str(config))(wavs[:2])["hidden_states"]
        embedded = hubconf.streaming_wavlm(ckpt=ckpt)(wavs[:2])["hidden_states"]
    assert all(torch.equal(a, b) for a, b in zip(from_yaml, embedded))


def test_no_checkpoint_is_an_error_not_random_weights():
    with pytest.raises(CheckpointError, match=r"needs a streaming WavLM checkpoint.*-k .*random_init=True"):
        hubconf.streaming_wavlm_400ms()


def test_random_init_only_on_request(ckpt):
    upstream = hubconf.streaming_wavlm_offline(random_init=True, model_config=TINY_MODEL)
    with torch.no_grad():
        assert len(upstream([torch.randn(3200)])["hidden_states"]) == NUM_LAYERS
    with pytest.raises(ValueError, match="pick one"):
        hubconf.streaming_wavlm(ckpt=ckpt, random_init=True)


def test_missing_checkpoint_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(CheckpointError, match="nowhere.pt does not exist"):
        hubconf.streaming_wavlm(ckpt=str(missing))


def test_pickled_objects_in_a_checkpoint_need_trust_pickle(tmp_path, ckpt, monkeypatch):
    monkeypatch.delenv(TRUST_PICKLE_ENV, raising=False)
    legacy = tmp_path / "legacy.pt"
    torch.save({**torch.load(ckpt, weights_only=True), "note": TrainingNote("saved by an old trainer")}, legacy)
    refusal = rf"legacy.pt contains pickled Python objects.*trust_pickle=True.*{TRUST_PICKLE_ENV}=1"
    with pytest.raises(CheckpointError, match=refusal):
        hubconf.streaming_wavlm(ckpt=str(legacy))
    trusted = hubconf.streaming_wavlm(ckpt=str(legacy), trust_pickle=True)
    reference = load_streaming_wavlm(ckpt)
    assert all(torch.equal(a, b) for a, b in zip(trusted.model.state_dict().values(), reference.state_dict().values()))


def test_mismatched_checkpoints_are_refused(tmp_path, ckpt):
    bare = save_tiny_checkpoint(tmp_path / "bare.pt", embed_config=False)
    with pytest.raises(CheckpointError, match=r"(?s)does not match the model exactly.*-g"):
        hubconf.streaming_wavlm(ckpt=str(bare))  # no config anywhere: the 12 x 1024 defaults do not fit
    other = write_model_config(tmp_path / "other.yaml", {"wavlm": {**TINY_MODEL["wavlm"], "dim": 32}})
    with pytest.raises(ModelConfigError, match="disagrees"):
        hubconf.streaming_wavlm(ckpt=ckpt, model_config=str(other))


def test_bad_arguments_are_refused(ckpt):
    with pytest.raises(TypeError, match="chunk_size"):
        hubconf.streaming_wavlm(ckpt=ckpt, chunk_size=400)
    with pytest.raises(ValueError, match="chunk_ms"):
        hubconf.streaming_wavlm(ckpt=ckpt, chunk_ms=0)
    with pytest.raises(ValueError, match="causal"):
        hubconf.streaming_wavlm(random_init=True, model_config={"wavlm": {**TINY_MODEL["wavlm"], "causal": False}})
