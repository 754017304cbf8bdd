"""Lhotse batches for NEST that are the manifest loader's batches: same padding, same noise draws, no silent drops."""

from __future__ import annotations

import torch
from lhotse.dataset import AudioSamples

from nemo.collections.asr.data.ssl_dataset import (
    AudioNoiseItem,
    LhotseAudioNoiseDataset,
    _audio_noise_collate_fn,
    pad_audio,
    sample_noise,
)


class ManifestParityLhotseAudioNoiseDataset(LhotseAudioNoiseDataset):
    """NeMo's Lhotse dataset for NEST (``use_lhotse: true``), building each utterance as ``AudioNoiseDataset`` does.

    NeMo's own version differs from its manifest and tarred loaders in what the model sees: it draws each
    utterance's noise at the padded batch length and reports that as the noise length, does not pad utterances
    shorter than 1 s, and loads with ``fault_tolerant=True``, which drops unreadable utterances from the batch
    without a word. Here each utterance is padded to ``min_audio_len_secs`` like ``AudioNoiseDataset``, gets noise of
    its own length, and the batch is made by NeMo's own collate function; an unreadable file stops the run.
    """

    def __init__(
        self, noise_manifest=None, batch_augmentor_cfg=None, min_audio_len_secs: float = 1.0, pad_audio_mode: str = "repeat"
    ):
        super().__init__(noise_manifest=noise_manifest, batch_augmentor_cfg=batch_augmentor_cfg)
        self.load_audio = AudioSamples(fault_tolerant=False)
        self.min_audio_len_secs = min_audio_len_secs
        self.pad_audio_mode = pad_audio_mode

    def __getitem__(self, cuts):
        audios, lengths = self.load_audio(cuts)
        items = []
        for audio, length, cut in zip(audios, lengths, cuts):
            audio = pad_audio(audio[:length], int(self.min_audio_len_secs * cut.sampling_rate), self.pad_audio_mode)
            noise, noise_len = sample_noise(self.noise_data, cut.sampling_rate, audio.shape[0])
            items.append(AudioNoiseItem(cut.id, audio, torch.tensor(audio.shape[0]).long(), noise, noise_len))
        return _audio_noise_collate_fn(items, self.batch_augmentor)
