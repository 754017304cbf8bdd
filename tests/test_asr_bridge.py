"""The ASR bridge: pretrained streaming NEST .nemo -> streaming CTC model -> NeMo's cache-aware streaming.

Tiny models (the real configs' tiny preset: d_model 64, 2 layers) on the espeak-ng corpus. The fine-tuning
script runs once, as a file in a subprocess; the other tests use its output or build models in-process.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from nemo_streaming_ssl.asr.pretrained_config import PretrainedMismatchError, merge_module_config
from nemo_streaming_ssl.data.manifest import ManifestError, read_manifest, write_manifest

from .nest_support import finetune_config, model_config

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples/asr/speech_to_text_finetune/finetune_streaming_ctc.py"
TRAIN_STEPS = 60
# NeMo's buffer with lookahead [-1, 4], fed the valid features: float32 round-off only (measured ~1e-6).
STREAMING_TOLERANCE = 1e-4



def save_nest(path: Path, *overrides: str, config_name: str = "nest_fast-conformer_streaming") -> Path:
    """A tiny (d_model 64, 2 layers) StreamingNESTModel from the real pretraining config, saved as a .nemo."""
    from nemo_streaming_ssl.models import StreamingNESTModel

    torch.manual_seed(0)
    StreamingNESTModel(model_config(*overrides, config_name=config_name)).save_to(str(path))
    return path


@pytest.fixture(scope="module")
def pretrained_nemo(tmp_path_factory) -> Path:
    return save_nest(tmp_path_factory.mktemp("nest") / "nest_lookahead.nemo", "mode=lookahead")


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
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
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
    from nemo.collections.asr.modules import ConformerEncoder

    from nemo_streaming_ssl.asr.finetune import build_finetune_model
    from nemo_streaming_ssl.models import StreamingNESTModel

    model = build_finetune_model(finetune_config(pretrained_nemo, speech_corpus))
    pretrained = StreamingNESTModel.restore_from(str(pretrained_nemo), map_location="cpu")
    ours, theirs = model.state_dict(), pretrained.state_dict()
    encoder_keys = [k for k in ours if k.startswith("encoder.")]
    assert encoder_keys and set(encoder_keys) == {k for k in theirs if k.startswith("encoder.")}
    for key in encoder_keys + [k for k in ours if k.startswith("preprocessor.")]:
        assert torch.equal(ours[key], theirs[key]), key
    # the same encoder config, but NeMo's own class instead of the project's bookkeeping subclass
    ours_cfg, theirs_cfg = OmegaConf.to_container(model.cfg.encoder), OmegaConf.to_container(pretrained.cfg.encoder)
    assert ours_cfg.pop("_target_") == "nemo.collections.asr.modules.ConformerEncoder"
    assert theirs_cfg.pop("_target_") == "nemo_streaming_ssl.modules.MultiLatencyConformerEncoder"
    assert ours_cfg == theirs_cfg and type(model.encoder) is ConformerEncoder
    # the subword vocabulary was trained on the training transcripts and spells them
    text = read_manifest(speech_corpus["train"])[0].text
    assert model.tokenizer.ids_to_text(model.tokenizer.text_to_ids(text)) == text
    assert model.decoder.num_classes_with_blank == model.tokenizer.vocab_size + 1


def test_finetuning_lowers_ctc_loss_and_saves_a_stock_nemo(finetune_run, finetuned_model):
    from nemo.collections.asr.models import EncDecCTCModelBPE

    before, after = finetune_run["validation_before"]["val_loss"], finetune_run["validation_after"]["val_loss"]
    assert after < 0.75 * before, (before, after)
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


def test_default_causal_pretraining_streams_off_from_the_second_frame(tmp_path, speech_corpus):
    """Zero lookahead (pretraining's default mode=causal): NeMo's second chunk starts with zero mel frames where
    the offline convolutions see real ones; measured ~1e-2 here (untrained decoder), and the cache carries it."""
    from nemo_streaming_ssl.asr.finetune import build_finetune_model
    from nemo_streaming_ssl.asr.streaming import compare_streaming_with_offline, setup_cache_aware_streaming

    model = build_finetune_model(finetune_config(save_nest(tmp_path / "causal.nemo"), speech_corpus))
    assert model.encoder.att_context_size == [-1, 0]
    setup_cache_aware_streaming(model, longest_stream_s=10.0)
    comparison = compare_streaming_with_offline(model, utterance(speech_corpus["val"]))
    n = comparison.common_frames
    per_frame = (comparison.offline.log_probs[:n] - comparison.streaming.log_probs[:n]).abs().amax(-1)
    assert per_frame[0] < STREAMING_TOLERANCE
    assert 1e-3 < per_frame[1] < 1e-1
    assert per_frame.max() < 1e-1


def test_encoder_override_of_architecture_key_is_refused(pretrained_nemo, speech_corpus):
    from nemo_streaming_ssl.asr.finetune import build_finetune_model

    cfg = finetune_config(pretrained_nemo, speech_corpus, **{"model.encoder.d_model": 32, "model.encoder.dropout": 0.2})
    with pytest.raises(PretrainedMismatchError, match=r"model\.encoder\.d_model: pretrained 64, given 32"):
        build_finetune_model(cfg)


def test_tunable_overrides_are_applied_and_nulls_keep_pretrained():
    pretrained = {"d_model": 32, "dropout": 0.1, "att_context_size": [[-1, 4]]}
    merged = merge_module_config(
        "encoder", pretrained, {"dropout": 0.3, "att_context_size": None, "d_model": 32}, frozenset({"dropout", "att_context_size"})
    )
    assert OmegaConf.to_container(merged) == {"d_model": 32, "dropout": 0.3, "att_context_size": [[-1, 4]]}


def test_offline_pretrained_model_is_refused(tmp_path, speech_corpus):
    from nemo_streaming_ssl.asr.finetune import build_finetune_model

    offline = save_nest(tmp_path / "offline.nemo", config_name="nest_fast-conformer_offline")
    with pytest.raises(PretrainedMismatchError, match="not a streaming model") as error:
        build_finetune_model(finetune_config(offline, speech_corpus))
    for key in ("causal_downsampling", "conv_context_size", "att_context_size", "normalize"):
        assert key in str(error.value)


def test_encoder_weights_from_a_different_nemo_are_refused(pretrained_nemo, tmp_path, speech_corpus):
    from nemo_streaming_ssl.asr.finetune import build_finetune_model
    from nemo_streaming_ssl.models import StreamingNESTModel

    narrower = save_nest(tmp_path / "narrower.nemo", "mode=lookahead", "model.encoder.d_model=32")
    cfg = finetune_config(pretrained_nemo, speech_corpus, **{"init_from_nemo_model.nest.path": str(narrower)})
    with pytest.raises(ValueError, match="point it at"):
        build_finetune_model(cfg)
    # and NeMo's partial load itself is strict: every selected weight must fit
    model = build_finetune_model(finetune_config(pretrained_nemo, speech_corpus))
    narrower_weights = StreamingNESTModel.restore_from(str(narrower), map_location="cpu").state_dict()
    with pytest.raises(PretrainedMismatchError, match="shapes differ: encoder"):
        model.load_part_of_state_dict(narrower_weights, ["encoder."], [], "narrower.nemo")


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


def test_rerun_of_another_config_into_a_used_folder_is_refused(finetune_run, pretrained_nemo, speech_corpus):
    """Reusing the first run's folder (exp_manager.version) with another model config (spec_augment back on):
    refused before anything is built or trained; the earlier .nemo and tokenizer keep their bytes (NeMo's
    exp_manager moves the plain files of a reused folder into run_<n>/ before our check)."""
    nemo = Path(finetune_run["nemo"])
    log_dir = nemo.parent
    kept = {path.name: path.read_bytes() for path in [nemo, *(log_dir / "tokenizer").rglob("*.model")]}
    assert len(kept) == 2  # the .nemo and the tokenizer the first run built
    command = [
        sys.executable, str(SCRIPT), f"pretrained_nemo={pretrained_nemo}",
        f"model.train_ds.manifest_filepath={speech_corpus['train']}",
        f"model.validation_ds.manifest_filepath={speech_corpus['val']}", "trainer.accelerator=cpu",
        f"exp_manager.exp_dir={log_dir.parent.parent}", f"+exp_manager.version={log_dir.name}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=log_dir, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "model.spec_augment: None -> {" in result.stderr and "name=" in result.stderr
    assert {path.name: path.read_bytes() for path in log_dir.rglob("*") if path.name in kept} == kept


def nemo_script_streaming(model, audio_path: Path):
    """The calls of NeMo's examples/asr/asr_cache_aware_streaming/speech_to_text_cache_aware_streaming_infer.py
    (2.5 line) at its default settings: restored model as is (its own streaming_cfg), NeMo's audio buffer,
    conformer_stream_step per chunk and once on the whole signal (--compare_vs_offline). That script is not in
    the nemo_toolkit wheel; this is our driver of the same NeMo calls. -> (streamed predictions, offline ones)."""
    from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

    buffer = CacheAwareStreamingAudioBuffer(model=model, online_normalization=False, pad_and_drop_preencoded=False)
    buffer.append_audio_file(str(audio_path), stream_id=-1)
    with torch.inference_mode():
        signal, length = buffer.get_all_audios()
        offline = model.conformer_stream_step(processed_signal=signal, processed_signal_length=length,
                                              return_transcription=True)[0]
        cache_channel, cache_time, cache_len = model.encoder.get_initial_cache_state(batch_size=1)
        predictions, hypotheses = None, None
        for step, (chunk, chunk_length) in enumerate(buffer):
            predictions, _, cache_channel, cache_time, cache_len, hypotheses = model.conformer_stream_step(
                processed_signal=chunk, processed_signal_length=chunk_length, cache_last_channel=cache_channel,
                cache_last_time=cache_time, cache_last_channel_len=cache_len,
                keep_all_outputs=buffer.is_buffer_empty(), previous_hypotheses=hypotheses,
                previous_pred_out=predictions,
                drop_extra_pre_encoded=0 if step == 0 else model.encoder.streaming_cfg.drop_extra_pre_encoded,
                return_transcription=True,
            )
    return torch.cat(predictions), torch.cat(offline)


def test_nemo_streaming_script_runs_on_the_finetuned_model_at_its_defaults(finetune_run, speech_corpus):
    """NeMo's cache-aware streaming script's calls, default settings, on the model the fine-tuning script wrote
    from a [-1, 4] pretraining: unlimited left context, NeMo's default 10000-frame cache. With a 5000-frame
    positional table this crashed at the first step (10005 vs 5005). NeMo's own path is not exact at the end
    of the stream (our runner is); the frames it emits agree with its offline pass."""
    from nemo.collections.asr.models import ASRModel

    model = ASRModel.restore_from(finetune_run["nemo"], map_location="cpu").eval()
    assert list(model.encoder.att_context_size) == [-1, 4] and model.encoder.pos_emb_max_len >= 10005
    assert model.encoder.streaming_cfg.last_channel_cache_size == 10000  # NeMo's default, untouched
    for entry in read_manifest(speech_corpus["val"])[:2]:
        streamed, offline = nemo_script_streaming(model, Path(entry.audio_filepath))
        # NeMo's buffer ends on its own chunk grid: measured one frame short of the offline pass here
        assert len(offline) - 1 <= len(streamed) <= len(offline)
        assert torch.equal(streamed, offline[: len(streamed)])


def test_positional_table_length_changes_no_output():
    """pos_emb_max_len 5000 vs 10240, same weights: the same encoder output (the table is not a weight)."""
    from nemo_streaming_ssl.streaming.untrained import untrained_model

    torch.manual_seed(0)
    short = untrained_model(["preset=tiny", "mode=lookahead", "model.encoder.pos_emb_max_len=5000"]).eval()
    long = untrained_model(["preset=tiny", "mode=lookahead"]).eval()
    assert long.encoder.pos_emb_max_len == 10240 and short.state_dict().keys() == long.state_dict().keys()
    long.load_state_dict(short.state_dict())
    features = torch.randn(2, short.encoder._feat_in, 400)
    with torch.no_grad():
        a, _ = short.encoder(audio_signal=features, length=torch.tensor([400, 250]))
        b, _ = long.encoder(audio_signal=features, length=torch.tensor([400, 250]))
    assert torch.equal(a, b)
