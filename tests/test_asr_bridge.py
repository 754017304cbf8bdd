"""The ASR bridge: pretrained streaming NEST .nemo -> streaming CTC model -> exact streaming transcription
(StreamingCTCTranscriber) and NeMo's own cache-aware streaming.

Tiny models (the real configs' tiny preset: d_model 64, 2 layers) on the espeak-ng corpus. The fine-tuning
script runs once, as a file in a subprocess, training one multi-latency model (lookahead [-1, 4], causal
[-1, 0], left context [16, 0]) long enough to transcribe its training utterances; the other tests use its
output or build models in-process.
"""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from nemo_streaming_ssl.asr.pretrained_config import PretrainedMismatchError, merge_module_config
from nemo_streaming_ssl.data.manifest import ManifestError, read_manifest, write_manifest

from .nest_support import finetune_config, model_config
from .script_loader import load_script
from .streaming_helpers import speech

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples/asr/speech_to_text_finetune/finetune_streaming_ctc.py"
TRANSCRIBE_SCRIPT = REPO / "examples/asr/speech_to_text_finetune/streaming_transcribe.py"
# Enough for text: at 200 steps the model writes most words of its training utterances (60 steps: only blanks).
TRAIN_STEPS = 200
# The three streaming modes, all trained into the one fine-tuned model (multi-latency).
ATT_CONTEXTS = {"lookahead": [-1, 4], "causal": [-1, 0], "left_context": [16, 0]}
# Our streaming, and NeMo's buffer with lookahead [-1, 4] fed the valid features: float32 round-off only (~1e-5).
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
        "model.train_ds.batch_size=8", "model.validation_ds.batch_size=4",
        "model.spec_augment=null", "model.optim.lr=5e-3", "model.optim.sched.warmup_steps=10",
        "model.encoder.att_context_size=" + str(list(ATT_CONTEXTS.values())).replace(" ", ""),
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
    assert sorted(map(tuple, {tuple(row["att_context_size"]) for row in rows})) == sorted(map(tuple, ATT_CONTEXTS.values()))
    assert len(rows) == 2 * len(ATT_CONTEXTS)
    for row in rows:
        assert row["streaming"] == row["offline"] and row["streaming_frames"] == row["offline_frames"]
        assert row["max_abs_log_prob_diff"] < STREAMING_TOLERANCE
        nemo = row["nemo_conformer_stream_step"]
        assert row["offline_frames"] - 1 <= nemo["frames"] <= row["offline_frames"]
        if row["att_context_size"][1] > 0:
            assert nemo["max_abs_log_prob_diff"] < STREAMING_TOLERANCE
    # NeMo's path with zero lookahead: zero mel frames stand in for the history at the second chunk
    zero_lookahead = [row["nemo_conformer_stream_step"] for row in rows if row["att_context_size"][1] == 0]
    assert all(nemo["max_abs_log_prob_diff"] > 1e-3 for nemo in zero_lookahead)


def test_nemo_cache_aware_streaming_matches_offline_with_lookahead(finetuned_model, speech_corpus):
    from nemo_streaming_ssl.asr.streaming import compare_nemo_streaming_with_offline, setup_cache_aware_streaming

    setup_cache_aware_streaming(finetuned_model, longest_stream_s=10.0)
    for index in range(2):
        comparison = compare_nemo_streaming_with_offline(finetuned_model, utterance(speech_corpus["train"], index))
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
    from nemo_streaming_ssl.asr.streaming import compare_nemo_streaming_with_offline, setup_cache_aware_streaming

    model = build_finetune_model(finetune_config(save_nest(tmp_path / "causal.nemo"), speech_corpus))
    assert model.encoder.att_context_size == [-1, 0]
    setup_cache_aware_streaming(model, longest_stream_s=10.0)
    comparison = compare_nemo_streaming_with_offline(model, utterance(speech_corpus["val"]))
    n = comparison.common_frames
    per_frame = (comparison.offline.log_probs[:n] - comparison.streaming.log_probs[:n]).abs().amax(-1)
    assert per_frame[0] < STREAMING_TOLERANCE
    assert 1e-3 < per_frame[1] < 1e-1
    assert per_frame.max() < 1e-1


# How audio arrives: one chunk per piece (default), 37 ms pieces, 1 s pieces (several chunks in one step).
PIECE_SAMPLES = (None, 592, 16000)


@pytest.fixture(scope="module")
def training_speech(speech_corpus) -> list[torch.Tensor]:
    """Four training utterances of about 3 s: the fine-tuned model writes most of their words."""
    return speech(speech_corpus, 4)


@pytest.mark.parametrize("mode", ATT_CONTEXTS)
def test_streamed_transcript_equals_offline_transcribe(finetuned_model, training_speech, mode):
    from nemo_streaming_ssl.asr.streaming_ctc import StreamingCTCTranscriber

    transcriber = StreamingCTCTranscriber(finetuned_model, att_context_size=ATT_CONTEXTS[mode])
    offline = transcriber.offline(training_speech)  # NeMo's model.transcribe in this attention context
    assert sum(len(reference.text.split()) for reference in offline) >= 8, [r.text for r in offline]  # not just blanks
    latency_ms = transcriber.runner.latency.algorithmic_latency_ms
    for audio, reference in zip(training_speech, offline):
        for piece in PIECE_SAMPLES:
            streamed = transcriber.transcribe(audio, sample_rate=16000, piece_samples=piece)
            assert streamed.text == reference.text, (piece, streamed.text, reference.text)
            assert streamed.log_probs.shape == reference.log_probs.shape
            assert (streamed.log_probs - reference.log_probs).abs().max() < STREAMING_TOLERANCE
            # text leaves with the frames that make it: edits applied chunk by chunk rebuild it
            text = ""
            for chunk in streamed.chunks:
                update = chunk.update
                text = text[: len(text) - update.replaced_chars] + update.new_text
                assert text == update.text
            assert text == reference.text and any(c.update.new_text for c in streamed.chunks[:-1])
            if piece == 592:  # a chunk's oldest audio waits the algorithmic latency, plus at most one piece
                for chunk in streamed.chunks[:-1]:
                    if chunk.update.first_frame > 0:
                        waited_ms = 1000 * (chunk.latency_s - chunk.compute_s)
                        assert latency_ms - 1e-6 <= waited_ms < latency_ms + 37 + 1e-6


def test_incremental_greedy_ctc_follows_nemo_through_chunk_edges_and_punctuation():
    """Char vocabulary: a repeat split over two chunks folds, a blank keeps doubled letters, and a comma after a
    space rewrites the text (NeMo removes the space)."""
    import torch.nn.functional as F
    from nemo.collections.asr.parts.submodules.ctc_decoding import CTCDecoding, CTCDecodingConfig

    from nemo_streaming_ssl.asr.streaming_ctc import IncrementalGreedyCTC

    decoding = CTCDecoding(OmegaConf.structured(CTCDecodingConfig()), vocabulary=list(" abc,"))
    b = decoding.blank_id
    frames = [b, 1, 1, b, 1, 0, 0, 2, b, 0, 4, 4, 3, b]  # a a | a ' ' b ' ' , c
    log_probs = F.one_hot(torch.tensor(frames), b + 1).float().log_softmax(-1)
    greedy = IncrementalGreedyCTC(decoding)
    state = greedy.new_state()
    updates = [greedy.update(state, log_probs[start:end]) for start, end in [(0, 2), (2, 5), (5, 10), (10, 11), (11, 14)]]
    assert updates == [([1], "a", 0), ([1], "a", 0), ([0, 2, 0], " b ", 0), ([4], ",", 1), ([3], "c", 0)]
    expected = decoding.ctc_decoder_predictions_tensor(log_probs[None], decoder_lengths=torch.tensor([len(frames)]))
    assert state.text == expected[0].text == "aa b,c"


def test_incremental_greedy_ctc_equals_nemo_on_the_subword_vocabulary(finetuned_model):
    import torch.nn.functional as F

    from nemo_streaming_ssl.asr.streaming_ctc import IncrementalGreedyCTC

    greedy = IncrementalGreedyCTC(finetuned_model.decoding)
    classes = finetuned_model.decoder.num_classes_with_blank
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        frames = torch.randint(0, classes, (60,), generator=generator)
        frames[torch.rand(60, generator=generator) < 0.4] = greedy.blank_id
        repeat = torch.rand(59, generator=generator) < 0.3
        frames[1:][repeat] = frames[:-1][repeat]
        log_probs = F.one_hot(frames, classes).float()
        state, edges = greedy.new_state(), sorted(torch.randint(0, 60, (5,), generator=generator).tolist())
        for start, end in zip([0, *edges], [*edges, 60]):
            greedy.update(state, log_probs[start:end])
        nemo = finetuned_model.decoding.ctc_decoder_predictions_tensor(log_probs[None], decoder_lengths=torch.tensor([60]))
        assert state.text == nemo[0].text and state.frames == 60


def test_transcriber_refuses_models_it_cannot_reproduce(pretrained_nemo, finetuned_model):
    from nemo_streaming_ssl.asr.streaming_ctc import StreamingCTCTranscriber
    from nemo_streaming_ssl.models import StreamingNESTModel

    nest = StreamingNESTModel.restore_from(str(pretrained_nemo), map_location="cpu")
    with pytest.raises(ValueError, match="StreamingNESTModel is not a CTC model"):
        StreamingCTCTranscriber(nest)
    greedy = finetuned_model.cfg.decoding
    finetuned_model.change_decoding_strategy(OmegaConf.create({"strategy": "beam", "beam": {"beam_size": 2}}), verbose=False)
    try:
        with pytest.raises(ValueError, match="decoding.strategy='beam'.*set decoding.strategy=greedy_batch"):
            StreamingCTCTranscriber(finetuned_model)
    finally:
        finetuned_model.change_decoding_strategy(greedy, verbose=False)


@pytest.fixture(scope="module")
def transcribe_script():
    return load_script(TRANSCRIBE_SCRIPT)


def test_transcribe_script_streams_a_manifest_and_a_file(transcribe_script, finetune_run, speech_corpus, tmp_path, capsys):
    out = tmp_path / "report.json"
    report = transcribe_script.main(transcribe_script.parse([
        f"model_path={finetune_run['nemo']}", f"manifest_filepath={speech_corpus['train']}", "max_utterances=2",
        "att_context_size=[-1,0]", "piece_ms=37", f"output_path={out}",
    ]))
    printed = capsys.readouterr().out
    summary, rows = report["summary"], report["utterances"]
    assert summary["utterances"] == summary["equal"] == 2 and summary["max_abs_log_prob_diff"] < STREAMING_TOLERANCE
    assert summary["wer_streaming"] == summary["wer_offline"] and all("wer" in row for row in rows)
    assert "equal to offline         2/2 transcripts" in printed and "WER vs reference" in printed
    # 80 ms chunks of one frame, 37 ms pieces: a line per frame as it leaves (the end of the audio may finish the
    # last chunk and flush the rest in one feed: two frames on the last line)
    ranges = [(int(a), int(b)) for a, b in re.findall(r"^ +\d+\.\d{3} s  frames +(\d+)-(\d+) +latency +[\d.]+ ms  \+'", printed, re.MULTILINE)]
    starts = [i for i, (first, _) in enumerate(ranges) if first == 0] + [len(ranges)]
    assert len(starts) == len(rows) + 1
    for row, begin, end in zip(rows, starts, starts[1:]):
        utterance_ranges = ranges[begin:end]
        assert all(first == last for first, last in utterance_ranges[:-1])
        assert [first for first, _ in utterance_ranges] == list(range(len(utterance_ranges)))
        assert utterance_ranges[-1][1] == row["frames"] - 1 and utterance_ranges[-1][1] - utterance_ranges[-1][0] <= 1
    assert json.loads(out.read_text())["summary"] == summary

    wav = read_manifest(speech_corpus["train"])[0].audio_filepath
    report = transcribe_script.main(transcribe_script.parse([f"model_path={finetune_run['nemo']}", f"audio_filepath={wav}"]))
    printed = capsys.readouterr().out
    assert report["summary"]["equal"] == 1 and "wer_streaming" not in report["summary"]
    assert f"transcript               {report['utterances'][0]['streaming']!r}" in printed
    assert "algorithmic latency 412.5 ms" in printed  # lookahead [-1, 4]: 5-frame chunks


def test_transcribe_script_checks_inputs_before_importing_nemo(finetune_run, speech_corpus, tmp_path):
    entries = read_manifest(speech_corpus["train"])[:2]
    entries[1] = dataclasses.replace(entries[1], audio_filepath=str(tmp_path / "gone.wav"))
    manifest = write_manifest(entries, tmp_path / "missing_audio.json")
    not_nemo = tmp_path / "model.nemo"
    not_nemo.write_text("not an archive")
    cases = [
        [f"model_path={tmp_path / 'none.nemo'}", f"audio_filepath={entries[0].audio_filepath}"],
        [f"model_path={not_nemo}", f"audio_filepath={entries[0].audio_filepath}"],
        [f"model_path={finetune_run['nemo']}", f"audio_filepath={entries[0].audio_filepath}", f"manifest_filepath={manifest}"],
        [f"model_path={finetune_run['nemo']}", f"manifest_filepath={manifest}"],
    ]
    program = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from tests.script_loader import load_script; "
        "from pathlib import Path; script = load_script(Path(sys.argv[2])); errors = []\n"
        "for argv in json.loads(sys.argv[3]):\n"
        "    try: script.main(script.parse(argv))\n"
        "    except SystemExit as error: errors.append(str(error))\n"
        "print(json.dumps({'errors': errors, 'nemo_imported': 'nemo' in sys.modules}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, str(REPO), str(TRANSCRIBE_SCRIPT), json.dumps(cases)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert not outcome["nemo_imported"]
    assert [error.split(":")[0] for error in outcome["errors"]] == [
        f"model_path={tmp_path / 'none.nemo'}", f"model_path={not_nemo}", "give audio_filepath=<file> or manifest_filepath=<manifest.json> (one of them)",
        f"manifest_filepath={manifest}",
    ]
    assert "no such file; give the .nemo written by finetune_streaming_ctc.py" in outcome["errors"][0]
    assert "not a .nemo archive" in outcome["errors"][1]
    assert f"{manifest}:2: {tmp_path / 'gone.wav'}: no such file" in outcome["errors"][3]


def test_transcribe_script_refuses_audio_at_another_sample_rate(transcribe_script, finetune_run, tmp_path):
    low_rate = tmp_path / "8k.wav"
    sf.write(low_rate, np.zeros(8000, dtype=np.float32), 8000)
    with pytest.raises(SystemExit, match=r"8k.wav: sample rate 8000 Hz, the model expects 16000 Hz; resample it"):
        transcribe_script.main(transcribe_script.parse([f"model_path={finetune_run['nemo']}", f"audio_filepath={low_rate}"]))


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


def test_rerun_of_another_config_into_a_used_folder_is_refused(finetune_run, pretrained_nemo, speech_corpus, tmp_path):
    """Reusing a run's folder (exp_manager.version) with another model config (spec_augment back on): refused
    before anything is built or trained; the earlier .nemo and tokenizer keep their bytes (NeMo's exp_manager
    moves the plain files of a reused folder into run_<n>/ before our check). On a copy of the script's run, which
    other tests read."""
    first = Path(finetune_run["nemo"]).parent
    log_dir = tmp_path / first.parent.name / first.name
    shutil.copytree(first, log_dir)
    nemo = log_dir / Path(finetune_run["nemo"]).name
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
