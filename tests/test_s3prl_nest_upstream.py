"""Streaming NEST .nemo files as s3prl upstreams: the streaming_nest entries through the real s3prl hub, for a
.nemo of each pretraining mode and of a fine-tuned CTC model. Each utterance of a padded batch gets, in every
hidden state, what the offline forward gives it alone; unstreamable chunk sizes and files are refused by name."""

from __future__ import annotations

import sys

import pytest
import torch

from nemo_streaming_ssl.streaming import NotStreamableError, StreamingEncoderRunner
from nemo_streaming_ssl.streaming.untrained import OFFLINE_CONFIG, untrained_model
from s3prl_upstream import hubconf
from s3prl_upstream.expert import TASK_KEYS
from s3prl_upstream.wavlm import CheckpointError
from tests.nest_support import finetune_config
from tests.s3prl_support import child_env, run, save_tiny_checkpoint
from tests.streaming_helpers import MODES

NUM_LAYERS, DIM, FRAME = 2, 64, 1280  # the tiny preset; 80 ms frames at 16 kHz
# Lengths (samples) that end inside 80/160/400 ms chunks; 3 s exceeds the 16-frame (1.28 s) left context.
LENGTHS = (48123, 7777, 20345, 2565, 800)
TOLERANCE = 1e-4  # max |streamed - offline alone|, per utterance and hidden state
PRETRAINED_MODES = ("causal", "lookahead", "left_context", "left_context_lookahead")
FITTING = {  # entries tested per .nemo: the chunk sizes its attention context streams
    "causal": ["streaming_nest", "streaming_nest_80ms", "streaming_nest_160ms", "streaming_nest_400ms",
               "streaming_nest_800ms", "streaming_nest_offline"],
    "lookahead": ["streaming_nest", "streaming_nest_800ms", "streaming_nest_offline"],
    "left_context": ["streaming_nest_80ms", "streaming_nest_400ms", "streaming_nest_offline"],
    "left_context_lookahead": ["streaming_nest", "streaming_nest_160ms"],
    "ctc": ["streaming_nest", "streaming_nest_400ms"],
}


@pytest.fixture(scope="module")
def nemo_files(tmp_path_factory, speech_corpus) -> dict[str, str]:
    """Tiny .nemo files: one per pretraining mode, a CTC model fine-tuned (untrained) from the lookahead one,
    and an offline (non-streaming) NEST model."""
    from nemo_streaming_ssl.asr.finetune import build_finetune_model

    out = tmp_path_factory.mktemp("nest_upstreams")
    torch.manual_seed(0)
    paths = {}
    for mode in PRETRAINED_MODES:
        paths[mode] = str(out / f"{mode}.nemo")
        untrained_model(MODES[mode]).save_to(paths[mode])
    build_finetune_model(finetune_config(paths["lookahead"], speech_corpus)).save_to(str(out / "ctc.nemo"))
    paths["ctc"] = str(out / "ctc.nemo")
    paths["offline"] = str(out / "offline.nemo")
    untrained_model(["preset=tiny"], config_name=OFFLINE_CONFIG).save_to(paths["offline"])
    return paths


@pytest.fixture(scope="module")
def hub():
    import s3prl.hub

    from s3prl_upstream.registration import register

    register(s3prl.hub)  # this pytest process may not carry the .pth hook
    return s3prl.hub


@pytest.fixture(scope="module")
def wavs() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return [0.1 * torch.randn(n, generator=generator) for n in LENGTHS]


@pytest.fixture(scope="module")
def alone(nemo_files, wavs) -> dict[str, list[torch.Tensor]]:
    """Per .nemo, per utterance alone: NeMo's offline forward with hooks on its layers, (L+1, T_i, D)."""
    references = {}
    for name in FITTING:
        runner = StreamingEncoderRunner.from_nemo(nemo_files[name], hidden_states=True)
        references[name] = [runner.offline(wav).hidden_states for wav in wavs]
    return references


@pytest.mark.s3prl
@pytest.mark.parametrize("model, entry", [(model, entry) for model, entries in FITTING.items() for entry in entries])
def test_each_utterance_of_a_padded_batch_streams_as_offline_alone(hub, nemo_files, alone, wavs, model, entry):
    upstream = getattr(hub, entry)(ckpt=nemo_files[model])
    with torch.no_grad():  # the streaming path (s3prl runs frozen upstreams under no_grad, in eval mode)
        out = upstream(wavs)
    hidden = out["hidden_states"]
    frames = max(reference.shape[1] for reference in alone[model])  # offline frame count of the longest
    assert len(hidden) == NUM_LAYERS + 1
    assert all(h.shape == (len(wavs), frames, DIM) for h in hidden)
    for b, reference in enumerate(alone[model]):
        valid = reference.shape[1]
        for layer, h in enumerate(hidden):
            assert (h[b, :valid] - reference[layer]).abs().max() < TOLERANCE, (b, layer)
            assert not h[b, valid:].any()  # zeros past the end
    assert out["last_hidden_state"] is hidden[-1] and all(out[key] is hidden for key in TASK_KEYS)


@pytest.mark.s3prl
def test_fine_tuned_ctc_nemo_is_nemo_stock_classes(hub, nemo_files):
    upstream = hub.streaming_nest(ckpt=nemo_files["ctc"])
    assert (type(upstream.runner.model).__name__, type(upstream.encoder).__name__) == ("EncDecCTCModelBPE", "ConformerEncoder")


@pytest.mark.s3prl
def test_s3prl_featurizer_weights_every_hidden_state(hub, nemo_files, wavs):
    from s3prl.upstream.interfaces import Featurizer

    upstream = hub.streaming_nest_400ms(ckpt=nemo_files["lookahead"])
    featurizer = Featurizer(upstream, upstream_device="cpu")
    assert (featurizer.output_dim, featurizer.downsample_rate, featurizer.layer_num) == (DIM, FRAME, NUM_LAYERS + 1)
    with torch.no_grad():
        features = featurizer(wavs, upstream(wavs))
    assert [tuple(f.shape) for f in features] == [(round(n / FRAME), DIM) for n in LENGTHS]


@pytest.mark.parametrize("model, entry, overrides, chunk_ms", [
    ("causal", "streaming_nest", {}, 80), ("lookahead", "streaming_nest", {}, 400),
    ("left_context_lookahead", "streaming_nest", {}, 160), ("lookahead", "streaming_nest_offline", {}, 10_000),
    ("left_context_lookahead", "streaming_nest_offline", {}, 10_080), ("lookahead", "streaming_nest", {"chunk_ms": 1200}, 1200),
])
def test_entry_chunk_sizes(nemo_files, model, entry, overrides, chunk_ms):
    """streaming_nest: the model's attention chunk; _offline: the fewest whole attention chunks lasting >= 10 s;
    chunk_ms= overrides the entry's."""
    assert hubconf.NEST_ENTRIES[entry](ckpt=nemo_files[model], **overrides).chunk_ms == pytest.approx(chunk_ms)


@pytest.mark.parametrize("model, entry, allowed, fitting", [
    ("lookahead", "streaming_nest_80ms", "400, 800, 1200, 1600",
     "streaming_nest, streaming_nest_400ms, streaming_nest_800ms, streaming_nest_offline"),
    ("lookahead", "streaming_nest_160ms", "400, 800, 1200, 1600",
     "streaming_nest, streaming_nest_400ms, streaming_nest_800ms, streaming_nest_offline"),
    ("left_context_lookahead", "streaming_nest_400ms", "160, 320, 480, 640",
     "streaming_nest, streaming_nest_160ms, streaming_nest_800ms, streaming_nest_offline"),
])
def test_chunk_sizes_the_attention_cannot_stream_are_refused(nemo_files, model, entry, allowed, fitting):
    with pytest.raises(ValueError, match=rf"^{entry}: -k {nemo_files[model]}: .*allowed chunk_ms: {allowed}, .*"
                                         rf"Entries that fit it: {fitting}$"):
        hubconf.NEST_ENTRIES[entry](ckpt=nemo_files[model])


def test_gradient_path_equals_the_stream_and_fine_tuning_steps_reach_it(nemo_files, wavs):
    """With gradients on (run_downstream.py -f) the expert runs NeMo's offline forward: the same hidden states,
    and backward reaches every weight. After an optimizer step the stream uses the new weights (position tables
    projected with the old ones would be off by ~3e-4)."""
    upstream = hubconf.streaming_nest_400ms(ckpt=nemo_files["lookahead"])
    with torch.no_grad():
        before = upstream(wavs)["hidden_states"]
    offline = upstream(wavs)["hidden_states"]
    assert all((a - b).abs().max() < TOLERANCE for a, b in zip(offline, before))

    upstream.train()
    sum(h.pow(2).mean() for h in upstream(wavs[:2])["hidden_states"]).backward()
    no_grad = [n for n, p in upstream.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"no gradient reached {no_grad}"
    torch.optim.AdamW(upstream.parameters(), lr=1e-2).step()  # s3prl's optimizer: moves every weight ~1e-2

    upstream.eval()
    with torch.no_grad():
        streamed = upstream(wavs)["hidden_states"]
    offline = upstream(wavs)["hidden_states"]
    assert all((a - b).abs().max() < TOLERANCE for a, b in zip(streamed, offline))
    assert (streamed[-1] - before[-1]).abs().max() > 1e-2  # the step did change the features


def test_no_nemo_file_is_an_error_not_random_weights():
    with pytest.raises(CheckpointError, match=r"streaming_nest_400ms needs a streaming NEST \.nemo.*-k /path/to/ssl.nemo"):
        hubconf.streaming_nest_400ms()


def test_unusable_files_and_arguments_are_refused_by_name(nemo_files, tmp_path):
    with pytest.raises(CheckpointError, match=r"^streaming_nest: -k .*nowhere.nemo: no such file"):
        hubconf.streaming_nest(ckpt=str(tmp_path / "nowhere.nemo"))
    wavlm = save_tiny_checkpoint(tmp_path / "wavlm.pt")
    with pytest.raises(CheckpointError, match=r"wavlm.pt is not a \.nemo.*streaming_wavlm entries"):
        hubconf.streaming_nest(ckpt=str(wavlm))
    with pytest.raises(NotStreamableError, match=rf"(?s)^streaming_nest_400ms: -k {nemo_files['offline']}: .*"
                                                 r"is not a streaming model.*normalize: per_feature"):
        hubconf.streaming_nest_400ms(ckpt=nemo_files["offline"])
    with pytest.raises(ValueError, match="drop -g model.yaml"):
        hubconf.streaming_nest(ckpt=nemo_files["causal"], model_config="model.yaml")
    with pytest.raises(TypeError, match="chunk_size"):
        hubconf.streaming_nest(ckpt=nemo_files["causal"], chunk_size=400)
    with pytest.raises(ValueError, match="chunk_ms must be a positive number"):
        hubconf.streaming_nest(ckpt=nemo_files["causal"], chunk_ms=0)


@pytest.mark.s3prl
def test_s3prl_hub_and_the_wavlm_entries_never_import_nemo(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.pt")
    probe = (
        "import sys, torch, s3prl.hub as hub\n"
        "from s3prl_upstream.registration import register\n"
        "register(hub)\n"  # as the .pth hook does on `import s3prl.hub`
        f"upstream = hub.streaming_wavlm_400ms(ckpt={str(ckpt)!r})\n"
        "with torch.no_grad():\n"
        "    upstream([torch.randn(8000)])\n"
        # NeMo, and our NeMo-side modules; nemo_streaming_ssl.core is NeMo-free and shared by both models
        "print(callable(hub.streaming_nest_400ms), sorted(m for m in sys.modules if m.split('.')[0] == 'nemo' "
        "or m.startswith('nemo_streaming_ssl.') and not m.startswith('nemo_streaming_ssl.core')))\n"
    )
    out = run([sys.executable, "-c", probe], env=child_env(with_repo_on_path=True)).stdout
    assert out.strip().splitlines()[-1] == "True []"
