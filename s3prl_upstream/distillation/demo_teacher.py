"""Tiny WavLM teachers with random weights, in Microsoft/s3prl's checkpoint format ``{"cfg", "model"}``.

Built by s3prl's own ``WavLM`` class with WavLM's real conv timing (hop 320 samples, receptive field 400) at toy
sizes. They stand in for ``WavLM-Large.pt`` where nothing may be downloaded (the walk-through, the tests): the
recipe runs end to end on them, but a student distilled from random weights learns nothing useful.
"""

from __future__ import annotations

from pathlib import Path

import torch

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
# WavLM Large's structure (LayerNorm conv blocks, pre-LN layers, normalized input): the student can copy it.
LARGE_STYLE = dict(TINY_DIMS, extractor_mode="layer_norm", layer_norm_first=True, normalize=True)


def write_s3prl_wavlm(path: str | Path, cfg_fields: dict = LARGE_STYLE, seed: int = 0) -> Path:
    """Builds s3prl's WavLM from ``cfg_fields`` (``WavLMConfig`` fields) and saves ``{"cfg": dict, "model": state}``.

    Biases and norm affines (all 1-D parameters) are randomised too, so a wrong key mapping cannot hide behind
    1s and 0s.
    """
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    torch.manual_seed(seed)
    cfg = WavLMConfig(cfg_fields)
    model = WavLM(cfg)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(0.1 * torch.randn_like(param))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"cfg": dict(cfg.__dict__), "model": model.state_dict()}, path)
    return path
