"""Bad input gets a clear error and leaves the stream as it was; non-streaming models are refused by key."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nemo.collections.asr.models.ssl_models import EncDecDenoiseMaskedTokenPredModel
from nemo.collections.asr.parts.preprocessing.features import FilterbankFeatures

from nemo_streaming_ssl.streaming import AudioInputError, NotStreamableError, StreamingEncoderRunner
from nemo_streaming_ssl.streaming.untrained import OFFLINE_CONFIG, compose_model_config, untrained_model
from tests.streaming_helpers import MODES, noise_audio, stream


@pytest.fixture(scope="module")
def runner():
    return StreamingEncoderRunner(untrained_model(MODES["lookahead"]))


@pytest.fixture(scope="module")
def audio():
    return noise_audio(1.5)


def test_wrong_sample_rate(runner):
    with pytest.raises(AudioInputError, match=r"8000 Hz.*16000 Hz.*sox"):
        runner.new_state(1, sample_rate=8000)


@pytest.mark.parametrize(
    "piece,message",
    [
        (torch.zeros(2, 1600), r"2-channel.*mono"),
        (np.zeros((1600, 2), dtype=np.float32), r"2-channel.*mono"),
        ((np.ones(1600) * 1000).astype(np.int16), r"int16.*float samples.*32768"),
        (torch.ones(1600, dtype=torch.int32), r"int32"),
        (torch.zeros(1600, dtype=torch.complex64), r"complex64"),
        (torch.tensor(0.5), r"1-D"),
        ([0.1, 0.2], r"torch.Tensor or numpy"),
    ],
)
def test_refused_pieces(runner, piece, message):
    state = runner.new_state(1, sample_rate=16000)
    with pytest.raises(AudioInputError, match=message):
        runner.feed(state, [piece])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_samples_are_refused_and_lose_nothing(runner, audio, bad):
    """A piece with NaN/Inf is refused before any stream changes; the stream then continues exactly."""
    state = runner.new_state(2, sample_rate=16000)
    outs = [runner.feed(state, [audio[:5000], audio[:5000]])]
    poisoned = audio[5000:8000].clone()
    poisoned[123] = bad
    with pytest.raises(AudioInputError, match=r"stream 1: non-finite .* index 123 .*sample 5123 of the stream"):
        runner.feed(state, [audio[5000:8000], poisoned])
    assert [s.features.num_samples for s in state.streams] == [5000, 5000]
    outs.append(runner.feed(state, [audio[5000:], audio[5000:]], last=True))
    expected = runner.offline(audio).frames
    for b in range(2):
        frames = torch.cat([out[b].frames for out in outs])
        assert frames.shape == expected.shape and (frames - expected).abs().max() < 1e-4


def test_empty_and_missing_pieces_change_nothing(runner, audio):
    state = runner.new_state(2, sample_rate=16000)
    for piece in (torch.zeros(0), np.zeros(0, dtype=np.float32), None):
        outs = runner.feed(state, [piece, piece])
        assert all(o.frames.shape == (0, runner.spec.d_model) for o in outs)
    assert state.num_steps == 0 and all(s.features.num_samples == 0 for s in state.streams)
    frames, _, _ = stream(runner, audio, 1000)  # and an empty stream ends with no frames
    assert runner.flush(state)[0].frames.shape[0] == 0 and frames.shape[0] > 0


def test_feeding_after_the_end_is_refused(runner, audio):
    state = runner.new_state(1, sample_rate=16000)
    runner.feed(state, audio, last=True)
    with pytest.raises(ValueError, match="stream 0 has ended"):
        runner.feed(state, audio[:100])


def test_chunk_sizes_the_model_does_not_allow(runner):
    with pytest.raises(ValueError, match=r"chunk_ms=300.*5 frames x 80 ms.*allowed chunk_ms: 400, 800, 1200"):
        StreamingEncoderRunner(runner.model, chunk_ms=300)
    with pytest.raises(ValueError, match=r"chunk_frames=7"):
        StreamingEncoderRunner(runner.model, chunk_frames=7)
    assert StreamingEncoderRunner(runner.model, chunk_ms=800).chunk_frames == 10
    with pytest.raises(NotStreamableError, match=r"\[-1, 1\] is not one this encoder was trained with"):
        StreamingEncoderRunner(runner.model, att_context_size=[-1, 1])


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        StreamingEncoderRunner.from_nemo(tmp_path / "missing.nemo")


def test_offline_nest_model_is_refused_with_every_reason(tmp_path):
    """The offline baseline config (stock NEST) saved as .nemo: refused, naming each offending key."""
    path = tmp_path / "offline.nemo"
    untrained_model(["preset=tiny"], config_name=OFFLINE_CONFIG).save_to(str(path))
    with pytest.raises(NotStreamableError) as error:
        StreamingEncoderRunner.from_nemo(path)
    message = str(error.value)
    for needle in (
        "preprocessor.normalize: per_feature",
        "att_context_size: [-1, -1] is bidirectional",
        "causal_downsampling: false",
        "conv_context_size: [4, 4]",
    ):
        assert needle in message


def stock_streaming_model(**changes):
    """NeMo's own NEST class with the streaming config, one key changed (a model our configs would refuse)."""
    cfg = compose_model_config(MODES["lookahead"])
    cfg.encoder._target_ = "nemo.collections.asr.modules.ConformerEncoder"
    cfg.loss._target_ = "nemo.collections.asr.losses.MultiMLMLoss"
    cfg.masking = {"_target_": "nemo.collections.asr.modules.RandomBlockMasking", "feat_in": 80, "block_size": 40}
    for key, value in changes.items():
        section, name = key.split(".")
        cfg[section][name] = value
    return EncDecDenoiseMaskedTokenPredModel(cfg).eval()


@pytest.mark.parametrize(
    "changes,needle",
    [
        ({"preprocessor.normalize": "all_features"}, "preprocessor.normalize: all_features"),
        ({"encoder.att_context_style": "regular", "encoder.att_context_size": [-1, -1]}, "bidirectional"),
        ({"encoder.att_context_style": "regular", "encoder.att_context_size": [-1, 2]}, "att_context_style: regular"),
        ({"encoder.causal_downsampling": False}, "causal_downsampling: false"),
        ({"encoder.conv_context_size": [6, 2]}, "conv_context_size: [6, 2]"),
        ({"encoder.conv_norm_type": "group_norm1"}, "conv_norm_type: group_norm1"),
        ({"encoder.self_attention_model": "abs_pos"}, "self_attention_model: abs_pos"),
        ({"preprocessor.exact_pad": True}, "exact_pad: true"),
    ],
)
def test_non_streaming_encoders_are_refused(changes, needle):
    with pytest.raises(NotStreamableError, match="not a streaming model") as error:
        StreamingEncoderRunner(stock_streaming_model(**changes))
    assert needle in str(error.value)


def test_use_torchaudio_is_refused_where_nemo_honours_it(audio):
    """NeMo 2.5.3 builds torchaudio's feature extractor for use_torchaudio: true, which the runner does not
    mirror: refused, naming the key. NeMo 3.0 ignores the key and builds FilterbankFeatures: streams exactly."""
    model = stock_streaming_model(**{"preprocessor.use_torchaudio": True})
    if not isinstance(model.preprocessor.featurizer, FilterbankFeatures):
        with pytest.raises(NotStreamableError, match="use_torchaudio: true"):
            StreamingEncoderRunner(model)
        return
    runner = StreamingEncoderRunner(model)
    frames, _, _ = stream(runner, audio, 592)
    expected = runner.offline(audio).frames
    assert frames.shape == expected.shape and (frames - expected).abs().max() < 1e-4


def test_batch_norm_in_eval_streams_exactly(audio):
    """BatchNorm in eval is a fixed per-channel affine map: accepted, and exact (with non-trivial statistics)."""
    model = stock_streaming_model(**{"encoder.conv_norm_type": "batch_norm"})
    torch.manual_seed(0)
    for layer in model.encoder.layers:
        layer.conv.batch_norm.running_mean.normal_()
        layer.conv.batch_norm.running_var.uniform_(0.5, 2.0)
    runner = StreamingEncoderRunner(model)
    frames, _, _ = stream(runner, audio, 592)
    expected = runner.offline(audio).frames
    assert frames.shape == expected.shape and (frames - expected).abs().max() < 1e-4
