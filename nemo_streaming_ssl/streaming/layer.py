"""NeMo's Conformer layer with a lean streaming path: the same arithmetic in fewer Python calls.

A streaming step of a small chunk gives each layer 1-20 frames, and the arithmetic of a layer is then
worth less than NeMo's module plumbing around it: each ``nn.Module`` call costs a few microseconds of
hook handling, and a layer makes ~30 of them (norms, linears, dropouts in eval, activation), plus its
adapter and access checks. This subclass changes only the streaming path (caches given, eval mode):
it runs the layer's own submodules' ``forward`` and weights directly, in NeMo's order
(x + FF1/2, x + attention, x + convolution, x + FF2/2, LayerNorm), so the numbers are NeMo's. Without
caches, while training, or with NeMo's tensor access enabled, the layer is NeMo's unchanged.
"""

from __future__ import annotations

import torch.nn.functional as F
from nemo.collections.asr.parts.submodules.conformer_modules import ConformerFeedForward, ConformerLayer

from .class_swap import swap_class


def _feed_forward(module: ConformerFeedForward, x):
    """ConformerFeedForward in eval mode (its dropout is the identity)."""
    x = module.activation.forward(F.linear(x, module.linear1.weight, module.linear1.bias))
    return F.linear(x, module.linear2.weight, module.linear2.bias)


class LeanStreamingConformerLayer(ConformerLayer):
    """``ConformerLayer`` with a lean streaming path (see the module doc)."""

    def forward(self, x, att_mask=None, pos_emb=None, pad_mask=None, cache_last_channel=None, cache_last_time=None):
        # NeMo's path also records the output for NeMo's AccessMixin (tensor registry) when asked.
        if cache_last_channel is None or self.training or self.is_access_enabled(getattr(self, "model_guid", None)):
            return super().forward(x, att_mask, pos_emb, pad_mask, cache_last_channel, cache_last_time)
        x = x + _feed_forward(self.feed_forward1, self.norm_feed_forward1.forward(x)) * self.fc_factor
        h = self.norm_self_att.forward(x)
        h, cache_last_channel = self.self_attn.forward(h, h, h, att_mask, pos_emb, cache=cache_last_channel)
        x = x + h
        h, cache_last_time = self.conv.forward(self.norm_conv.forward(x), pad_mask=pad_mask, cache=cache_last_time)
        x = x + h
        x = x + _feed_forward(self.feed_forward2, self.norm_feed_forward2.forward(x)) * self.fc_factor
        return self.norm_out.forward(x), cache_last_channel, cache_last_time


def use_lean_streaming_layers(encoder) -> None:
    """Give the encoder's Conformer layers the lean streaming path (offline forward unchanged).

    Layers with adapters keep NeMo's path, which runs them. The class swap keeps parameters,
    state-dict keys and the offline forward as they are.
    """
    plain = [layer for layer in encoder.layers if not layer.is_adapter_available()]
    swap_class(plain, ConformerLayer, LeanStreamingConformerLayer)
