"""NEST's masked-token cross-entropy, safe for batches without a scored token."""

from __future__ import annotations

from nemo.collections.asr.losses import MultiMLMLoss
from nemo.core.classes import typecheck


class MaskedTokenPredLoss(MultiMLMLoss):
    """NeMo's MultiMLMLoss (cross-entropy on tokens whose frames are > mask_threshold masked), but 0 instead
    of NaN when no token of the batch is scored (short utterances, eval without masking)."""

    @typecheck()
    def forward(self, masks, decoder_outputs, targets, decoder_lengths=None, target_lengths=None):
        """masks: (B, D, T) mel-frame masks, T a multiple of combine_time_steps; see MultiMLMLoss."""
        steps = self.mlm_loss.combine_time_steps
        token_masked = masks.transpose(1, 2).reshape(masks.shape[0], masks.shape[2] // steps, -1).mean(-1)
        if not bool((token_masked > self.mlm_loss.mask_threshold).any()):
            return decoder_outputs.sum() * 0.0  # keeps the graph (and DDP's gradient hooks) intact
        return super().forward(
            masks=masks,
            decoder_outputs=decoder_outputs,
            targets=targets,
            decoder_lengths=decoder_lengths,
            target_lengths=target_lengths,
        )
