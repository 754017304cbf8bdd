"""Streaming safety checks: each unsafe setting is refused at construction, naming the key and the fix."""

import re
from pathlib import Path

import pytest
from hydra.utils import instantiate

from nemo_streaming_ssl.config import config_dir
from nemo_streaming_ssl.models import StreamingConfigError, StreamingNESTModel

from .nest_support import model_config

DOCS = Path(__file__).resolve().parents[1] / "STREAMING_NEST.md"

REFUSED = [
    (["model.encoder.conv_norm_type=batch_norm"], "model.encoder.conv_norm_type", "layer_norm"),
    (["model.encoder.causal_downsampling=false"], "model.encoder.causal_downsampling", "true"),
    (["model.encoder.self_attention_model=abs_pos"], "model.encoder.self_attention_model", "rel_pos"),
    (["model.encoder.subsampling=vggnet"], "model.encoder.subsampling", "dw_striding"),
    (["model.encoder.conv_context_size=null"], "model.encoder.conv_context_size", "causal"),
    (["model.encoder.conv_context_size=[4,4]"], "model.encoder.conv_context_size", "causal"),
    (["model.preprocessor.normalize=per_feature"], "model.preprocessor.normalize", "NA"),
    (["model.preprocessor.pad_to=16"], "model.preprocessor.pad_to", "pad_to=0"),
    (["model.encoder.att_context_size=[-1,-1]"], "model.encoder.att_context_size", "finite right context"),
    (["model.encoder.att_context_size=[10,3]"], "model.encoder.att_context_size", "left % (right+1)"),
    (["model.encoder.att_context_size=[[-1,0],[10,3]]"], "pair 1: [10, 3]", "e.g. 8 or 12"),
    (
        ["model.encoder.att_context_size=[[-1,0],[-1,4]]", "model.encoder._target_=nemo.collections.asr.modules.ConformerEncoder"],
        "model.encoder._target_",
        "MultiLatencyConformerEncoder",
    ),
    (["masking=random"], "model.masking._target_", "CausalBlockMasking"),
    (["model.mask_position=post_conv"], "model.mask_position", "pre_conv"),
    (["model.quantizer.combine_time_steps=4"], "model.quantizer.combine_time_steps", "set it to 8"),
    (["model.target_normalize=whole"], "model.target_normalize", "per_feature"),
    (["model.target_alignment=next_frame"], "model.target_alignment", "('earliest_complete', 'same_index')"),
    (["model.encoder.att_context_size=[4,0]", "model.masking.left_context_size=2"], "model.masking.left_context_size", "<= 5"),
    (
        ["model.encoder.att_context_style=regular", "model.encoder.att_context_size=[64,2]", "model.masking.left_context_size=2"],
        "model.masking.left_context_size",
        "chunked_limited",
    ),
]


@pytest.mark.parametrize("overrides, key, fix", REFUSED, ids=[r[1] + ":" + r[0][-1] for r in REFUSED])
def test_unsafe_setting_is_refused(overrides, key, fix):
    with pytest.raises(StreamingConfigError) as error:
        StreamingNESTModel(model_config(*overrides))
    assert key in str(error.value) and fix in str(error.value)


def test_masking_settings_are_checked_by_the_module():
    from hydra.errors import InstantiationException  # NeMo builds modules with Hydra, which wraps their errors

    with pytest.raises(InstantiationException, match="masking.mask_prob=0.9 must lie in"):
        StreamingNESTModel(model_config("model.masking.mask_prob=0.9"))


@pytest.mark.parametrize(
    "overrides",
    [
        ["mode=causal"],
        ["mode=lookahead"],
        ["mode=left_context"],
        ["mode=multi_latency"],
        ["model.encoder.att_context_size=[-1,4]"],
        ["model.encoder.att_context_size=[[-1,0],[-1,1],[-1,4]]"],
        ["model.encoder.att_context_style=regular", "model.encoder.att_context_size=[-1,2]"],
    ],
)
def test_streaming_modes_build(overrides):
    model = StreamingNESTModel(model_config(*overrides))
    assert model.streaming and model.encoder.pre_encode.is_causal


def test_offline_baseline_is_stock_nest():
    from nemo.collections.asr.modules import ConformerEncoder, RandomBlockMasking

    model = StreamingNESTModel(model_config(config_name="nest_fast-conformer_offline"))
    assert not model.streaming
    assert type(model.encoder) is ConformerEncoder and isinstance(model.mask_processor, RandomBlockMasking)
    assert not model.encoder.pre_encode.is_causal and model.cfg.preprocessor.normalize == "per_feature"


def documented_presets() -> dict[str, tuple[int, int, int, float]]:
    """STREAMING_NEST.md's preset table: {preset: (d_model, heads, layers, encoder params in millions)}."""
    rows = re.findall(r"^\| `(\w+)`[^|]*\| (\d+) \| (\d+) \| (\d+) \| ([\d.]+)M \|", DOCS.read_text(), re.M)
    return {name: (int(d), int(h), int(n), float(p)) for name, d, h, n, p in rows}


def encoder_parameters(preset: str) -> int:
    """Encoder parameter count of a preset, from encoders of 1 and 2 layers (every layer has the same size)."""
    cfg = model_config(preset=preset).encoder
    counts = []
    for layers in (1, 2):
        cfg.n_layers = layers
        counts.append(sum(p.numel() for p in instantiate(cfg).parameters()))
    return counts[0] + (model_config(preset=preset).encoder.n_layers - 1) * (counts[1] - counts[0])


def test_presets_are_the_documented_sizes():
    """Each preset builds the d_model, heads, layers and encoder parameter count (to the printed digits) that
    STREAMING_NEST.md states; conv kernel 9 throughout."""
    documented = documented_presets()
    assert set(documented) == {p.stem for p in (config_dir() / "preset").glob("*.yaml")}
    for preset, (d_model, heads, layers, millions) in documented.items():
        enc = model_config(preset=preset).encoder
        assert (enc.d_model, enc.n_heads, enc.n_layers, enc.conv_kernel_size) == (d_model, heads, layers, 9), preset
        digits = len(str(millions).split(".")[1])
        assert round(encoder_parameters(preset) / 1e6, digits) == millions, preset
