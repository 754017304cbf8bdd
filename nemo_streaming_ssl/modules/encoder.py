"""A ConformerEncoder that tells which attention context it used for the current batch."""

from __future__ import annotations

from nemo.collections.asr.modules import ConformerEncoder


class MultiLatencyConformerEncoder(ConformerEncoder):
    """NeMo's ConformerEncoder plus ``current_att_context_size``: the [left, right] pair of the last forward.

    With a list of ``att_context_size`` pairs NeMo draws one per training batch inside ``forward_internal``
    and hands it only to ``_create_masks``; the streaming NEST model needs it to align targets to frames.
    Weights and outputs are those of ConformerEncoder.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.current_att_context_size = list(self.att_context_size)

    def _create_masks(self, att_context_size, padding_length, max_audio_length, offset, device):
        # The one place the drawn context is visible: record it for the model's target alignment.
        self.current_att_context_size = list(att_context_size)
        return super()._create_masks(att_context_size, padding_length, max_audio_length, offset, device)
