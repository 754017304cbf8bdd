"""Frame alignment between a causal student and a non-causal WavLM teacher.

Both share WavLM's conv front end (7 blocks, hop 320 samples, receptive field 400 samples at 16 kHz):

* the causal student left-pads every conv block by ``kernel - 1`` frames, so it emits
  ``ceil(S / 320)`` frames for ``S`` samples and frame ``t`` covers samples ``[320 t - 399, 320 t]``;
* s3prl's WavLM convolves without padding: ``floor((S - 400) / 320) + 1`` frames, frame ``t`` covering
  ``[320 t, 320 t + 399]``.

We feed the teacher the waveform left-padded with ``receptive_field - 1 = 399`` zero samples. Its frame
``t`` then covers exactly the samples of student frame ``t`` and both emit ``ceil(S / 320)`` frames, so
student frame ``t`` is distilled towards teacher frame ``t``. Every intermediate conv frame of the student
coincides with one of the padded teacher's, so with the teacher's conv weights the two front ends agree
exactly from frame 2 on (frames 0-1 see the padding: replicated first sample vs zeros).
"""

from __future__ import annotations

import math
from typing import Sequence

# (kernel, stride) of WavLM's conv blocks; channel counts do not matter for timing.
ConvLayout = Sequence[tuple[int, int]]


def hop_samples(conv_layout: ConvLayout) -> int:
    """Samples between consecutive output frames (320 for WavLM)."""
    return math.prod(stride for _, stride in conv_layout)


def receptive_field_samples(conv_layout: ConvLayout) -> int:
    """Samples one output frame depends on (400 for WavLM)."""
    field, jump = 1, 1
    for kernel, stride in conv_layout:
        field += (kernel - 1) * jump
        jump *= stride
    return field


def causal_frames(num_samples: int, conv_layout: ConvLayout) -> int:
    """Frames of the causal (left-padded) front end: ceil(S / hop)."""
    frames = num_samples
    for _, stride in conv_layout:
        frames = math.ceil(frames / stride)
    return frames


def valid_frames(num_samples: int, conv_layout: ConvLayout) -> int:
    """Frames of the unpadded front end (s3prl's WavLM): floor((S - 400) / 320) + 1 for S >= 400, else 0."""
    frames = num_samples
    for kernel, stride in conv_layout:
        frames = (frames - kernel) // stride + 1 if frames >= kernel else 0
    return frames


def teacher_left_pad_samples(conv_layout: ConvLayout) -> int:
    """Zero samples prepended to the teacher's input so its frame t covers student frame t's samples."""
    return receptive_field_samples(conv_layout) - 1
