"""Per-layer hidden states of NeMo's own offline ``ConformerEncoder`` forward, taken with hooks.

The hidden states of an encoder with L Conformer layers are L+1 tensors (B, T, D):

* 0: what NeMo's encoder feeds its first layer: the subsampled mel frames after ``pos_enc``, i.e. the
  ``pre_encode`` output times sqrt(d_model) when ``xscaling`` is on (dropout in training). With
  ``rel_pos`` attention no position is added to it: positions enter each layer's attention as a
  separate table. The raw ``pre_encode`` output is not a state any layer sees.
* l = 1..L: the output of layer l, as layer l+1 receives it; the last is the encoder output when the
  encoder has no ``out_proj`` (``feat_out: -1``, our configs and NeMo's FastConformer CTC).

The streaming runner emits the same tensors frame by frame (``StreamingEncoderRunner(hidden_states=True)``);
this offline version is its reference and the forward with gradients (fine-tuning), so it runs NeMo's
forward unchanged and only records layer inputs and the last layer's output.
"""

from __future__ import annotations

import torch


def encoder_hidden_states(
    encoder, features: torch.Tensor, feature_lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """features (B, F, M) mel frames, feature_lengths (B,) -> NeMo's (encoded (B, D, T), frames (B,)) and the
    hidden states (L+1, B, T, D). Frames past a row's length are whatever NeMo computes there (not zero)."""
    captured: list[torch.Tensor] = []

    def keep_input(layer, args, kwargs):
        captured.append(kwargs["x"] if "x" in kwargs else args[0])

    def keep_output(layer, args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_pre_hook(keep_input, with_kwargs=True) for layer in encoder.layers]
    handles.append(encoder.layers[-1].register_forward_hook(keep_output))
    try:
        encoded, lengths = encoder(audio_signal=features, length=feature_lengths)
    finally:
        for handle in handles:
            handle.remove()
    return encoded, lengths, torch.stack(captured)
