"""The ASR bridge: pretrained streaming NEST .nemo -> streaming char CTC model -> NeMo's cache-aware streaming.

Tiny models (d_model 32, 2 layers) on the espeak-ng corpus. The fine-tuning script runs once, as a file
in a subprocess; the other tests use its output or build models in-process.
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nemo_streaming_ssl.asr.pretrained_config import PretrainedMismatchError, merge_module_config
from nemo_streaming_ssl.data.manifest import ManifestError, read_manifest, write_manifest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples/asr/speech_to_text_finetune/finetune_streaming_ctc.py"
TRAIN_STEPS = 60
# NeMo's buffer with lookahead [-1, 4], fed the valid features: float32 round-off only (measured ~1e-6).
STREAMING_TOLERANCE = 1e-4

TINY_ENCODER = {"d_model": 32, "n_layers": 2, "n_heads": 2, "subsampling_conv_channels": 32, "conv_kernel_size": 9}
OFFLINE_ENCODER = {
    "causal_downsampling": False,
    "conv_context_size": None,
    "att_context_style": "regular",
    "att_context_size": [-1, -1],
    "conv_norm_type": "batch_norm",
}


def nest_config(encoder: dict, preprocessor: dict | None = None):
    """A tiny NEST model config with a streaming FastConformer encoder (stand-in until nest-model lands)."""
    d_model = encoder.get("d_model", TINY_ENCODER["d_model"])
    return OmegaConf.create(
        {
            "sample_rate": 16000,
            "num_classes": 64,
            "num_books": 1,
            "code_dim": 16,
            "squeeze_single": False,
            "mask_position": "pre_conv",
            "preprocessor": {
                "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                "sample_rate": 16000,
                "normalize": "NA",
                "window_size": 0.025,
                "window_stride": 0.01,
                "window": "hann",
                "features": 80,
                "n_fft": 512,
                "log": True,
                "frame_splicing": 1,
                "dither": 1e-5,
                "pad_to": 0,
                "pad_value": 0.0,
                **(preprocessor or {}),
            },
            "spec_augment": {"_target_": "nemo.collections.asr.modules.SpectrogramAugmentation", "freq_masks": 0, "time_masks": 0},
            "quantizer": {
                "_target_": "nemo.collections.asr.modules.RandomProjectionVectorQuantizer",
                "feat_in": 80, "code_dim": 16, "num_books": 1, "num_classes": 64, "dist_fn": "l2",
                "freeze": True, "squeeze_single": False, "combine_time_steps": 8,
            },
            "masking": {
                "_target_": "nemo.collections.asr.modules.RandomBlockMasking",
                "block_size": 40, "mask_prob": 0.01, "feat_in": 80, "freeze": True, "allow_overlap": True,
            },
            "encoder": {
                "_target_": "nemo.collections.asr.modules.ConformerEncoder",
                "feat_in": 80, "feat_out": -1, "subsampling": "dw_striding", "subsampling_factor": 8,
                "causal_downsampling": True, "ff_expansion_factor": 2, "self_attention_model": "rel_pos",
                "att_context_size": [[-1, 4]], "att_context_style": "chunked_limited", "xscaling": True,
                "untie_biases": True, "pos_emb_max_len": 5000, "conv_norm_type": "layer_norm",
                "conv_context_size": "causal", "dropout": 0.1, "dropout_pre_encoder": 0.1, "dropout_emb": 0.0,
                "dropout_att": 0.1, **TINY_ENCODER, **encoder,
            },
            "decoder": {
                "_target_": "nemo.collections.asr.modules.MultiSoftmaxDecoder",
                "feat_in": d_model, "num_classes": 64, "num_decoders": 1, "squeeze_single": False,
            },
            "loss": {"_target_": "nemo.collections.asr.losses.MultiMLMLoss", "combine_time_steps": 8, "num_decoders": 1, "squeeze_single": False},
            "optim": {"name": "adamw", "lr": 1e-3},
        }
    )


def save_nest(path: Path, encoder: dict | None = None, preprocessor: dict | None = None) -> Path:
    from nemo.collections.asr.models.ssl_models import EncDecDenoiseMaskedTokenPredModel

    torch.manual_seed(0)
    EncDecDenoiseMaskedTokenPredModel(nest_config(encoder or {}, preprocessor)).save_to(str(path))
    return path


@pytest.fixture(scope="module")
def pretrained_nemo(tmp_path_factory) -> Path:
    return save_nest(tmp_path_factory.mktemp("nest") / "nest_streaming.nemo")


def finetune_config(pretrained: Path, corpus: dict, config_name: str = "fastconformer_ctc_streaming_finetune", **overrides):
    """The shipped config (composed by Hydra, as the script does) pointed at ``pretrained`` and the corpus."""
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose(config_name)
    cfg.pretrained_nemo = str(pretrained)
    if cfg.get("tokenizer_build") is not None:
        cfg.tokenizer_build.dir = tempfile.mkdtemp(prefix="tokenizer", dir=corpus["train"].parent)
    cfg.model.train_ds.manifest_filepath = str(corpus["train"])
    cfg.model.validation_ds.manifest_filepath = str(corpus["val"])
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


@pytest.fixture(scope="module")
def finetune_run(pretrained_nemo, speech_corpus, tmp_path_factory) -> dict:
    """The fine-tuning script, run as a file, as a user would: returns its summary JSON."""
    exp_dir = tmp_path_factory.mktemp("exp")
    command = [
        sys.executable, str(SCRIPT),
        f"pretrained_nemo={pretrained_nemo}",
        f"model.train_ds.manifest_filepath={speech_corpus['train']}",
        f"model.validation_ds.manifest_filepath={speech_corpus['val']}",
        "model.train_ds.batch_size=4", "model.validation_ds.batch_size=4",
        "model.spec_augment=null", "model.optim.lr=3e-3", "model.optim.sched.warmup_steps=10",
        f"trainer.max_steps={TRAIN_STEPS}", "trainer.max_epochs=1000", "trainer.check_val_every_n_epoch=100",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        f"exp_manager.exp_dir={exp_dir}", "exp_manager.create_checkpoint_callback=false",
        "exp_manager.create_tensorboard_logger=false", "streaming_check.max_utterances=2",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=exp_dir, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (summary_path,) = exp_dir.rglob("finetune_summary.json")
    return json.loads(summary_path.read_text())


@pytest.fixture(scope="module")
def finetuned_model(finetune_run):
    from nemo.collections.asr.models import ASRModel

    model = ASRModel.restore_from(finetune_run["nemo"], map_location="cpu")
    model.eval()
    return model


def utterance(manifest: Path, index: int = 0) -> torch.Tensor:
    audio, _ = sf.read(read_manifest(manifest)[index].audio_filepath, dtype="float32")
    return torch.from_numpy(audio)


def test_encoder_initialised_exactly_from_pretrained(pretrained_nemo, speech_corpus):
    from nemo.collections.asr.models.ssl_models import EncDecDenoiseMaskedTokenPredModel

    from nemo_streaming_ssl.asr.finetune import build_finetune_model

    model = build_finetune_model(finetune_config(pretrained_nemo, speech_corpus))
    pretrained = EncDecDenoiseMaskedTokenPredModel.restore_from(str(pretrained_nemo), map_location="cpu")
    ours, theirs = model.state_dict(), pretrained.state_dict()
    encoder_keys = [k for k in ours if k.startswith("encoder.")]
    assert encoder_keys and set(encoder_keys) == {k for k in theirs if k.startswith("encoder.")}
    for key in encoder_keys + [k for k in ours if k.startswith("preprocessor.")]:
        assert torch.equal(ours[key], theirs[key]), key
    assert OmegaConf.to_container(model.cfg.encoder) == OmegaConf.to_container(pretrained.cfg.encoder)
    # the subword vocabulary was trained on the training transcripts and spells them
    text = read_manifest(speech_corpus["train"])[0].text
    assert model.tokenizer.ids_to_text(model.tokenizer.text_to_ids(text)) == text
    assert model.decoder.num_classes_with_blank == model.tokenizer.vocab_size + 1


def test_finetuning_lowers_ctc_loss_and_saves_a_stock_nemo(finetune_run, finetuned_model):
    from nemo.collections.asr.models import EncDecCTCModelBPE

    before, after = finetune_run["validation_before"]["val_loss"], finetune_run["validation_after"]["val_loss"]
    assert after < 0.5 * before, (before, after)
    assert type(finetuned_model) is EncDecCTCModelBPE  # no project class needed to load the result
    assert finetuned_model.encoder.att_context_size == [-1, 4]


def test_script_reports_streaming_equal_to_offline(finetune_run):
    rows = finetune_run["streaming"]
    assert len(rows) == 2
    for row in rows:
        assert row["max_abs_log_prob_diff"] < STREAMING_TOLERANCE
        assert row["offline_frames"] - 1 <= row["streaming_frames"] <= row["offline_frames"]


def test_nemo_cache_aware_streaming_matches_offline_with_lookahead(finetuned_model, speech_corpus):
    from nemo_streaming_ssl.asr.streaming import compare_streaming_with_offline, setup_cache_aware_streaming

    setup_cache_aware_streaming(finetuned_model, longest_stream_s=10.0)
    for index in range(2):
        comparison = compare_streaming_with_offline(finetuned_model, utterance(speech_corpus["train"], index))
        frames = len(comparison.offline.log_probs)
        # NeMo's buffer stops before a final chunk too short to make a frame: at most one frame (80 ms) fewer.
        assert frames - 1 <= len(comparison.streaming.log_probs) <= frames
        assert comparison.max_abs_log_prob_diff < STREAMING_TOLERANCE
        n = comparison.common_frames
        assert torch.equal(comparison.offline.log_probs[:n].argmax(-1), comparison.streaming.log_probs[:n].argmax(-1))


def test_nemo_streaming_without_lookahead_is_off_from_the_first_chunk(finetuned_model, speech_corpus):
    """Zero lookahead: NeMo's first chunk is one mel frame with zeros before it; the error (~2e-2) stays in the cache."""
    from nemo_streaming_ssl.asr.streaming import compare_streaming_with_offline, setup_cache_aware_streaming

    finetuned_model.encoder.set_default_att_context_size([-1, 0])
    try:
        setup_cache_aware_streaming(finetuned_model, longest_stream_s=10.0)
        comparison = compare_streaming_with_offline(finetuned_model, utterance(speech_corpus["val"]))
    finally:
        finetuned_model.encoder.set_default_att_context_size([-1, 4])
    n = comparison.common_frames
    per_frame = (comparison.offline.log_probs[:n] - comparison.streaming.log_probs[:n]).abs().amax(-1)
    assert per_frame[0] < STREAMING_TOLERANCE
    assert 1e-3 < per_frame[1:5].max() < 1e-1
    assert per_frame.max() < 1e-1


def test_encoder_override_of_architecture_key_is_refused(pretrained_nemo, speech_corpus):
    from nemo_streaming_ssl.asr.finetune import build_finetune_model

    cfg = finetune_config(pretrained_nemo, speech_corpus, **{"model.encoder.d_model": 64, "model.encoder.dropout": 0.2})
    with pytest.raises(PretrainedMismatchError, match=r"model\.encoder\.d_model: pretrained 32, given 64"):
        build_finetune_model(cfg)


def test_tunable_overrides_are_applied_and_nulls_keep_pretrained():
    pretrained = {"d_model": 32, "dropout": 0.1, "att_context_size": [[-1, 4]]}
    merged = merge_module_config(
        "encoder", pretrained, {"dropout": 0.3, "att_context_size": None, "d_model": 32}, frozenset({"dropout", "att_context_size"})
    )
    assert OmegaConf.to_container(merged) == {"d_model": 32, "dropout": 0.3, "att_context_size": [[-1, 4]]}


def test_offline_pretrained_model_is_refused(tmp_path, speech_corpus):
    from nemo_streaming_ssl.asr.finetune import build_finetune_model

    offline = save_nest(tmp_path / "offline.nemo", OFFLINE_ENCODER, {"normalize": "per_feature"})
    with pytest.raises(PretrainedMismatchError, match="not a streaming model") as error:
        build_finetune_model(finetune_config(offline, speech_corpus))
    for key in ("causal_downsampling", "conv_context_size", "att_context_size", "normalize"):
        assert key in str(error.value)


def test_encoder_weights_from_a_different_nemo_are_refused(pretrained_nemo, tmp_path, speech_corpus):
    from nemo.collections.asr.models.ssl_models import EncDecDenoiseMaskedTokenPredModel

    from nemo_streaming_ssl.asr.finetune import build_finetune_model

    wider = save_nest(tmp_path / "wider.nemo", {"d_model": 64})
    cfg = finetune_config(pretrained_nemo, speech_corpus, **{"init_from_nemo_model.nest.path": str(wider)})
    with pytest.raises(ValueError, match="point it at"):
        build_finetune_model(cfg)
    # and NeMo's partial load itself is strict: every selected weight must fit
    model = build_finetune_model(finetune_config(pretrained_nemo, speech_corpus))
    wider_weights = EncDecDenoiseMaskedTokenPredModel.restore_from(str(wider), map_location="cpu").state_dict()
    with pytest.raises(PretrainedMismatchError, match="shapes differ: encoder"):
        model.load_part_of_state_dict(wider_weights, ["encoder."], [], "wider.nemo")


def test_init_that_skips_encoder_weights_is_refused(pretrained_nemo, speech_corpus):
    from nemo_streaming_ssl.asr.finetune import build_finetune_model

    cfg = finetune_config(pretrained_nemo, speech_corpus, **{"init_from_nemo_model.nest.exclude": ["layers.1."]})
    with pytest.raises(ValueError, match="leaves .* encoder weights untrained"):
        build_finetune_model(cfg)


def test_empty_transcript_is_refused_naming_the_line(pretrained_nemo, speech_corpus, tmp_path):
    from nemo_streaming_ssl.asr.finetune import build_finetune_model

    entries = read_manifest(speech_corpus["train"])
    entries[3] = dataclasses.replace(entries[3], text="")
    manifest = write_manifest(entries, tmp_path / "train.json")
    with pytest.raises(ManifestError, match=rf"{manifest}:4: empty \"text\""):
        build_finetune_model(finetune_config(pretrained_nemo, {**speech_corpus, "train": manifest}))


def test_char_vocabulary_too_dense_for_80ms_frames_is_refused(pretrained_nemo, speech_corpus):
    """espeak at 120-200 words per minute says more characters per second than there are 80 ms frames."""
    from nemo_streaming_ssl.asr.finetune import build_finetune_model

    cfg = finetune_config(pretrained_nemo, speech_corpus, "fastconformer_ctc_streaming_finetune_char")
    with pytest.raises(ManifestError, match=r"CTC\s+cannot align them(.|\n)*train\.json:\d+: \d+ frames needed, \d+ available"):
        build_finetune_model(cfg)


def test_transcript_outside_given_char_vocabulary_is_refused(pretrained_nemo, speech_corpus):
    from nemo_streaming_ssl.asr.finetune import build_finetune_model

    cfg = finetune_config(
        pretrained_nemo, speech_corpus, "fastconformer_ctc_streaming_finetune_char",
        **{"model.labels": list(" abcdefghijklmnopqrstuvw")},
    )
    with pytest.raises(ManifestError, match=r"train\.json:\d+: transcript has characters \['[xyz]'"):
        build_finetune_model(cfg)
