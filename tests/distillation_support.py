"""Tiny WavLM teachers for the distillation tests, written in s3prl's WavLM checkpoint format (random weights)."""

from __future__ import annotations

from pathlib import Path

import pytest

from s3prl_upstream.distillation.demo_teacher import LARGE_STYLE, TINY_DIMS, write_s3prl_wavlm

BASE_STYLE = dict(TINY_DIMS, extractor_mode="default", layer_norm_first=False, normalize=False)  # not convertible


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict[str, Path]:
    """A Large-style (convertible) and a Base-style tiny teacher, by name; import it into a test module to use it."""
    folder = tmp_path_factory.mktemp("teachers")
    return {
        "large": write_s3prl_wavlm(folder / "large_style.pt", LARGE_STYLE, seed=0),
        "base": write_s3prl_wavlm(folder / "base_style.pt", BASE_STYLE, seed=1),
    }
