"""model.input_normalize: a fixed per-mel-bin map of the encoder input, the same in training, offline
evaluation, a restored .nemo, the streaming runner and fine-tuning; bad numbers refused naming the key."""

from __future__ import annotations

import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from nemo_streaming_ssl.data.manifest import read_manifest
from nemo_streaming_ssl.models import StreamingConfigError, StreamingNESTModel
from nemo_streaming_ssl.modules import FixedNormMelSpectrogramPreprocessor
from nemo_streaming_ssl.streaming import StreamingEncoderRunner

from .nest_support import finetune_config, model_config
from .streaming_helpers import speech, stream

FIXED = "model.input_normalize.type=fixed"
MELS = 80  # the shipped configs' preprocessor.features


def given(mean: list[float], std: list[float]) -> list[str]:
    return [f"+model.preprocessor.fixed_mean={mean}".replace(" ", ""), f"+model.preprocessor.fixed_std={std}".replace(" ", "")]


def ramp() -> tuple[list[float], list[float]]:
    return [-10.0 + 0.1 * i for i in range(MELS)], [1.0 + 0.05 * i for i in range(MELS)]


@pytest.fixture(scope="module")
def estimated(speech_corpus) -> StreamingNESTModel:
    """A tiny causal model whose numbers were estimated from the test corpus when it was built."""
    torch.manual_seed(0)
    return StreamingNESTModel(model_config(FIXED, corpus=speech_corpus)).eval()


@pytest.fixture(scope="module")
def saved(estimated, tmp_path_factory):
    path = tmp_path_factory.mktemp("fixed_norm") / "fixed.nemo"
    estimated.save_to(str(path))
    return path


REFUSED = [
    (["model.input_normalize.type=corpus"], "model.input_normalize.type", "('NA', 'fixed')"),
    ([FIXED], "model.input_normalize.type", "model.train_ds.manifest_filepath"),  # no data, no numbers
    ([FIXED, *given([0.0] * 79, [1.0] * 79)], "model.preprocessor.fixed_mean", "79 values"),
    ([FIXED, *given([0.0] * MELS, [1.0] * 79 + [0.0])], "model.preprocessor.fixed_std", "must be > 0"),
    ([FIXED, *given([0.0] * MELS, [-1.0] * MELS)], "model.preprocessor.fixed_std", "must be > 0"),
    ([FIXED, given([0.0] * MELS, [1.0] * MELS)[0]], "model.preprocessor", "give both fixed_mean and fixed_std"),
    (given([0.0] * MELS, [1.0] * MELS), "model.input_normalize.type", "set model.input_normalize.type=fixed"),
    ([FIXED, "model.input_normalize.max_utterances=0", *given(*ramp())], "model.input_normalize.max_utterances", "positive"),
]


@pytest.mark.parametrize("overrides, key, fix", REFUSED, ids=[f"{r[1]}:{r[2][:20]}" for r in REFUSED])
def test_bad_setting_is_refused_naming_the_key(overrides, key, fix):
    with pytest.raises(StreamingConfigError) as error:
        StreamingNESTModel(model_config(*overrides))
    assert key in str(error.value) and fix in str(error.value)


def test_preprocessor_refuses_a_second_normalization():
    mean, std = ramp()
    with pytest.raises(ValueError, match=r"model\.preprocessor\.normalize.*set model\.preprocessor\.normalize=NA"):
        FixedNormMelSpectrogramPreprocessor(fixed_mean=mean, fixed_std=std, features=MELS, normalize="per_feature")


def test_default_is_raw_log_mels():
    model = StreamingNESTModel(model_config())
    assert type(model.preprocessor).__name__ == "AudioToMelSpectrogramPreprocessor"
    assert "fixed_mean" not in model.cfg.preprocessor


def test_estimate_is_the_corpus_mean_and_std(estimated, speech_corpus):
    """Few utterances in the test corpus: all are read; the numbers are every valid frame's per-bin mean/std."""
    raw = StreamingNESTModel(model_config()).eval()
    frames = []
    for entry in read_manifest(speech_corpus["train"]):
        audio = torch.from_numpy(sf.read(entry.audio_filepath, dtype="float32")[0])[None]
        feats, length = raw.preprocessor(input_signal=audio, length=torch.tensor([audio.shape[1]]))
        frames.append(feats[0, :, : int(length)].double())
    frames = torch.cat(frames, dim=1)
    pre = estimated.cfg.preprocessor
    assert pre._target_ == "nemo_streaming_ssl.modules.FixedNormMelSpectrogramPreprocessor"
    assert torch.allclose(torch.tensor(pre.fixed_mean, dtype=torch.float64), frames.mean(dim=1), atol=1e-4)
    assert torch.allclose(torch.tensor(pre.fixed_std, dtype=torch.float64), frames.std(dim=1, unbiased=False), atol=1e-4)


def test_encoder_input_is_normalized_and_targets_are_not(estimated, speech_corpus):
    """Batched (2 lengths: NeMo's own fixed_mean/fixed_std fails there): the encoder input is (raw - mean) / std,
    per utterance as alone, padding 0; the quantizer's log-mels are the raw ones."""
    raw_model = StreamingNESTModel(model_config()).eval()
    clips = speech(speech_corpus, 2, seconds=1.5)
    lengths = torch.tensor([clips[0].numel(), clips[1].numel() // 2])
    batch = torch.zeros(2, int(lengths.max()))
    batch[0, : lengths[0]], batch[1, : lengths[1]] = clips[0], clips[1][: lengths[1]]
    with torch.no_grad():
        feats, feat_len = estimated.preprocessor(input_signal=batch, length=lengths)
        raw, raw_len = raw_model.preprocessor(input_signal=batch, length=lengths)
        targets, _ = estimated.target_log_mels(batch, lengths)
        alone, _ = estimated.preprocessor(input_signal=batch[1:, : lengths[1]], length=lengths[1:])
    mean = torch.tensor(estimated.cfg.preprocessor.fixed_mean).unsqueeze(-1)
    std = torch.tensor(estimated.cfg.preprocessor.fixed_std).unsqueeze(-1)
    assert torch.equal(feat_len, raw_len) and torch.equal(targets, raw)
    for b in range(2):
        n = int(feat_len[b])
        assert torch.allclose(feats[b, :, :n], (raw[b, :, :n] - mean) / std, atol=1e-5)
        assert torch.all(feats[b, :, n:] == 0.0)
    assert torch.allclose(alone[0], feats[1, :, : alone.shape[-1]], atol=1e-5)


def test_restore_keeps_the_numbers_and_the_outputs(estimated, saved, speech_corpus):
    restored = StreamingNESTModel.restore_from(str(saved), map_location="cpu").eval()
    assert isinstance(restored.preprocessor, FixedNormMelSpectrogramPreprocessor)
    assert restored.cfg.preprocessor.fixed_mean == estimated.cfg.preprocessor.fixed_mean
    assert restored.cfg.preprocessor.fixed_std == estimated.cfg.preprocessor.fixed_std
    assert OmegaConf.to_container(restored.cfg.input_normalize) == {"type": "fixed", "max_utterances": 200}
    audio = speech(speech_corpus, 1)[0][None]
    outputs = []
    with torch.no_grad():
        for model in (estimated, restored):
            feats, length = model.preprocessor(input_signal=audio, length=torch.tensor([audio.shape[1]]))
            outputs.append(model.encoder(audio_signal=feats, length=length)[0])
    assert torch.equal(*outputs)


@pytest.mark.parametrize("mode", ["causal", "lookahead"])
def test_stream_equals_offline_with_the_fixed_map(mode, speech_corpus):
    """The streaming runner applies the same map frame by frame: streamed == offline forward (1e-4, as unnormalized)."""
    torch.manual_seed(0)
    model = StreamingNESTModel(model_config(FIXED, f"mode={mode}", *given(*ramp()))).eval()
    runner = StreamingEncoderRunner(model, chunk_frames=model.encoder.att_context_size[1] + 1, posteriors=True)
    for audio in speech(speech_corpus, 2):
        expected = runner.offline(audio)
        for piece in (160, 10**9):
            frames, log_probs, _ = stream(runner, audio, piece)
            assert frames.shape == expected.frames.shape
            assert (frames - expected.frames).abs().max() < 1e-4
            assert (log_probs - expected.log_probs).abs().max() < 1e-4
    # and the map matters: the same weights on raw log-mels give other frames
    with torch.no_grad():
        raw, raw_len = model.target_log_mels(audio[None], torch.tensor([audio.numel()]))
        unnormalized = model.encoder(audio_signal=raw, length=raw_len)[0][0, :, : len(expected.frames)].T
    assert (unnormalized - expected.frames).abs().max() > 1e-2


def test_finetuned_model_gets_the_same_input_map(saved, estimated, speech_corpus):
    from nemo_streaming_ssl.asr.finetune import build_finetune_model

    model = build_finetune_model(finetune_config(saved, speech_corpus)).eval()
    assert isinstance(model.preprocessor, FixedNormMelSpectrogramPreprocessor)
    assert model.cfg.preprocessor.fixed_mean == estimated.cfg.preprocessor.fixed_mean
    audio = speech(speech_corpus, 1)[0][None]
    length = torch.tensor([audio.shape[1]])
    with torch.no_grad():
        assert torch.equal(model.preprocessor(input_signal=audio, length=length)[0], estimated.preprocessor(input_signal=audio, length=length)[0])


def test_finetuning_cannot_drop_the_map(saved, speech_corpus):
    from nemo_streaming_ssl.asr.finetune import build_finetune_model
    from nemo_streaming_ssl.asr.pretrained_config import PretrainedMismatchError

    cfg = finetune_config(saved, speech_corpus, **{"model.preprocessor._target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor"})
    with pytest.raises(PretrainedMismatchError, match=r"model\.preprocessor\._target_.*fixed input normalization"):
        build_finetune_model(cfg)
