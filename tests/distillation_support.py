"""Tiny WavLM teachers for the distillation tests, written in s3prl's WavLM checkpoint format (random weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# WavLM's real conv timing (kernels/strides, hop 320, receptive field 400) with few channels.
TINY_CONV = "[(48,10,5)] + [(48,3,2)] * 4 + [(48,2,2)] * 2"
TINY_DIMS = dict(
    encoder_layers=3,
    encoder_embed_dim=32,
    encoder_ffn_embed_dim=64,
    encoder_attention_heads=4,
    conv_feature_layers=TINY_CONV,
    conv_pos=16,
    conv_pos_groups=4,
    relative_position_embedding=True,
    num_buckets=320,
    max_distance=800,
    gru_rel_pos=True,
    dropout=0.0,
    attention_dropout=0.0,
)
LARGE_STYLE = dict(TINY_DIMS, extractor_mode="layer_norm", layer_norm_first=True, normalize=True)
BASE_STYLE = dict(TINY_DIMS, extractor_mode="default", layer_norm_first=False, normalize=False)


def write_s3prl_wavlm(path: Path, cfg_fields: dict, seed: int) -> Path:
    """Build s3prl's WavLM from a small WavLMConfig and save ``{"cfg": dict, "model": state_dict}``.

    Biases and norm affines (all 1-D parameters) are randomised too, so a wrong key mapping cannot hide
    behind 1s and 0s.
    """
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    torch.manual_seed(seed)
    cfg = WavLMConfig(cfg_fields)
    model = WavLM(cfg)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(0.1 * torch.randn_like(param))
    torch.save({"cfg": dict(cfg.__dict__), "model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict[str, Path]:
    """A Large-style (convertible) and a Base-style tiny teacher, by name; import it into a test module to use it."""
    folder = tmp_path_factory.mktemp("teachers")
    return {
        "large": write_s3prl_wavlm(folder / "large_style.pt", LARGE_STYLE, seed=0),
        "base": write_s3prl_wavlm(folder / "base_style.pt", BASE_STYLE, seed=1),
    }
