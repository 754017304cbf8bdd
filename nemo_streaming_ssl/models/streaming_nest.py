"""NEST pretraining for streaming FastConformers: NeMo's denoising masked-token model, made causal."""

from __future__ import annotations

from typing import Optional

import torch
from lightning.pytorch import Trainer
from omegaconf import DictConfig, OmegaConf

from nemo.collections.asr.data import audio_to_text_dataset
from nemo.collections.asr.models.ssl_models import EncDecDenoiseMaskedTokenPredModel
from nemo.collections.common.data.lhotse import get_lhotse_dataloader_from_config
from nemo.collections.asr.parts.preprocessing.features import normalize_batch
from nemo.core.classes.common import typecheck

from ..modules import MultiLatencyConformerEncoder
from ..receptive_field import ReceptiveField, same_index_frames, token_prediction_frames
from .config_checks import check_streaming_config, check_target_alignment
from .input_normalize import apply_input_normalize
from .lhotse_audio import ManifestParityLhotseAudioNoiseDataset


class StreamingNESTModel(EncDecDenoiseMaskedTokenPredModel):
    """NEST (denoising masked token prediction, arXiv:2408.13106) for streaming encoders.

    With ``model.streaming: true`` (the default):

    * the config is checked for streaming safety before anything is built (``StreamingConfigError``);
    * targets are the quantized clean features, utterance-normalized only for the quantizer if
      ``model.target_normalize`` says so, cut to whole tokens (any feature length works);
    * with ``model.input_normalize.type: fixed`` the encoder (only) sees log-mels mapped per mel bin by constant
      corpus statistics (``FixedNormMelSpectrogramPreprocessor``), estimated from ``train_ds`` when not given;
    * token k is predicted by the encoder frame given by ``token_prediction_frames`` for the attention
      context the encoder used for this batch (the pair drawn in multi-latency training); with
      ``model.target_alignment: same_index`` (an ablation) by frame k instead (``same_index_frames``);
    * only tokens that are fully masked and have a predicting frame are scored.

    ``forward`` then returns, per token: log_probs (B, K, C, H) gathered at the predicting frames,
    encoded_len (B,), masks (B, D, K*f) the masked mel frames of the scored tokens only, tokens (B, K, H).

    With ``model.streaming: false`` it is NeMo's EncDecDenoiseMaskedTokenPredModel (the offline baseline).
    Both keep noisy utterances as long as the clean ones (NeMo 2.5.3's augmentor may report them shorter), and
    both batch Lhotse data (``use_lhotse: true``) exactly as manifest data (``ManifestParityLhotseAudioNoiseDataset``).
    """

    def __init__(self, cfg: DictConfig, trainer: Optional[Trainer] = None):
        if not isinstance(cfg, DictConfig):
            cfg = OmegaConf.create(cfg)
        check_target_alignment(cfg)
        cfg = apply_input_normalize(cfg)  # before NeMo builds the preprocessor from cfg
        if cfg.get("streaming", True):
            check_streaming_config(cfg)  # refuse before building anything
        super().__init__(cfg, trainer)

    def _setup_dataloader_from_config(self, config):
        if not config.get("use_lhotse"):
            return super()._setup_dataloader_from_config(config)
        audio_to_text_dataset.inject_dataloader_value_from_model_config(self.cfg, config, key="sample_rate")
        return get_lhotse_dataloader_from_config(
            config,
            global_rank=self.global_rank,
            world_size=self.world_size,
            dataset=ManifestParityLhotseAudioNoiseDataset(config.get("noise_manifest"), config.get("batch_augmentor")),
        )

    def setup_training_data(self, train_data_config):
        if not train_data_config.get("use_lhotse"):
            return super().setup_training_data(train_data_config)
        # NeMo's version sizes the epoch by len(dataset), which Lhotse's tarred (iterable) datasets lack and
        # which does not apply to Lhotse's endless streams (max_steps sizes the run); the rest is the same.
        self._update_dataset_config(dataset_name="train", config=train_data_config)
        self._train_dl = self._setup_dataloader_from_config(config=train_data_config)

    @property
    def streaming(self) -> bool:
        return bool(self.cfg.get("streaming", True))

    @property
    def target_alignment(self) -> str:
        return str(self.cfg.get("target_alignment", "earliest_complete"))

    def receptive_field(self) -> ReceptiveField:
        """The encoder's receptive field under the attention context of its last forward (eval: the first pair)."""
        enc = self.encoder
        pair = enc.current_att_context_size if isinstance(enc, MultiLatencyConformerEncoder) else enc.att_context_size
        return ReceptiveField.from_att_context(pair, enc.att_context_style, enc.subsampling_factor, enc.n_layers)

    def target_log_mels(self, signal: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean log-mels for the quantizer: without the fixed input map (model.input_normalize), which is
        the encoder's; the targets are normalized by model.target_normalize only."""
        log_mel = getattr(self.preprocessor, "log_mel", None)  # FixedNormMelSpectrogramPreprocessor
        if log_mel is not None:
            return log_mel(signal, length)
        return self.preprocessor(input_signal=signal, length=length)

    def _target_features(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, D, T) clean features -> (B, D, K*f) quantizer input, K = T // f whole tokens."""
        normalize = self.cfg.get("target_normalize", None)
        if normalize not in (None, "NA"):
            feats, _, _ = normalize_batch(feats, lengths, normalize)
        steps = self.encoder.subsampling_factor
        return feats[:, :, : feats.shape[-1] // steps * steps]

    def align_to_tokens(self, log_probs, encoded_len, masks, tokens, feat_lengths):
        """Per-frame outputs -> per-token outputs and the masks of the scored tokens.

        Args:
            log_probs: (B, T_enc, C[, H]) decoder output per encoder frame.
            encoded_len: (B,) encoder frames.
            masks: (B, D, T) 1.0 at masked mel frames.
            tokens: (B, K[, H]) targets of the K whole tokens.
            feat_lengths: (B,) mel frames of each utterance.
        Returns:
            (B, K, C[, H]) log-probs of each token's predicting frame, encoded_len, (B, D, K*f) masks of the
            scored tokens only (fully masked and predictable), tokens.
        """
        steps = self.encoder.subsampling_factor
        batch, num_tokens = tokens.shape[:2]
        if self.target_alignment == "same_index":
            frames, valid = same_index_frames(feat_lengths // steps, encoded_len, num_tokens)
        else:
            frames, valid = token_prediction_frames(feat_lengths // steps, encoded_len, num_tokens, self.receptive_field())
        index = frames.view(batch, num_tokens, *([1] * (log_probs.dim() - 2))).expand(-1, -1, *log_probs.shape[2:])
        token_log_probs = log_probs.gather(1, index)
        token_frames = masks[:, :, : num_tokens * steps]
        fully_masked = token_frames.unflatten(2, (num_tokens, steps)).amin(dim=3).amin(dim=1) > 0
        scored = (fully_masked & valid).repeat_interleave(steps, dim=1).unsqueeze(1)
        return token_log_probs, encoded_len, token_frames * scored.to(token_frames.dtype), tokens

    @typecheck()
    def forward(
        self,
        input_signal=None,
        input_signal_length=None,
        processed_signal=None,
        processed_signal_length=None,
        noise_signal=None,
        noise_signal_length=None,
        processed_noise_signal=None,
        processed_noise_signal_length=None,
        noisy_input_signal=None,
        noisy_input_signal_length=None,
        processed_noisy_input_signal=None,
        processed_noisy_input_signal_length=None,
        apply_mask=False,
    ):
        if input_signal_length is not None and noisy_input_signal_length is not None:
            # NeMo 2.5.3's MultiSpeakerNoiseAugmentation reports the noise file's length for utterances it leaves
            # unmixed, silently cutting them short; a noisy utterance is as long as its clean one.
            noisy_input_signal_length = torch.maximum(noisy_input_signal_length, input_signal_length)
        # Streaming: targets from whole tokens of (optionally normalized) clean features, outputs aligned per token.
        # NeMo's typecheck refuses keys outside input_types even when None, so pass on only what was given.
        passthrough = {
            key: value
            for key, value in dict(
                noise_signal=noise_signal,
                noise_signal_length=noise_signal_length,
                processed_noise_signal=processed_noise_signal,
                processed_noise_signal_length=processed_noise_signal_length,
                noisy_input_signal=noisy_input_signal,
                noisy_input_signal_length=noisy_input_signal_length,
                processed_noisy_input_signal=processed_noisy_input_signal,
                processed_noisy_input_signal_length=processed_noisy_input_signal_length,
                apply_mask=apply_mask,
            ).items()
            if value is not None
        }
        if not self.streaming:
            return super().forward(
                input_signal=input_signal,
                input_signal_length=input_signal_length,
                processed_signal=processed_signal,
                processed_signal_length=processed_signal_length,
                **passthrough,
            )
        if processed_signal is None:
            processed_signal, processed_signal_length = self.target_log_mels(input_signal, input_signal_length)
        outputs = super().forward(
            processed_signal=self._target_features(processed_signal, processed_signal_length),
            processed_signal_length=processed_signal_length,
            **passthrough,
        )
        return self.align_to_tokens(*outputs, feat_lengths=processed_signal_length)
