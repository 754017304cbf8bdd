"""s3prl upstream adapter for streaming NEST encoders (``.nemo``): a list of waveforms in, s3prl's feature dict out.

Inference (no gradients, eval mode: s3prl's frozen upstream, evaluation, feature extraction) really streams:
the batch goes to the model's :class:`StreamingEncoderRunner` as a batch of streams, one chunk of audio per
``feed``; each utterance's last piece is fed with ``last=True``, so it ends (and its last frames come out)
where the utterance ends and padding never enters its frames. The runner equals the offline forward, so
every chunk size gives the same features (within 1e-4). The runner is inference-only: with gradients on
(``run_downstream.py -f``) or in training mode, the expert runs NeMo's offline forward with the same
per-layer outputs (:func:`encoder_hidden_states`) on the padded batch.

Importing this module imports NeMo; the hub entries import it only when a NEST entry is built.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from nemo_streaming_ssl.core.protocol import join
from nemo_streaming_ssl.streaming.hidden_states import encoder_hidden_states
from nemo_streaming_ssl.streaming.runner import StreamingEncoderRunner
from s3prl_upstream.expert import SAMPLE_RATE, TASK_KEYS


class StreamingNESTExpert(nn.Module):
    """s3prl upstream (``UpstreamExpert`` protocol) around a streaming NEST encoder's runner.

    forward(wavs: list of [S_i] float tensors at 16 kHz) -> dict with ``hidden_states``: L+1 tensors
    [B, T, D] (L Conformer layers; T = the encoder's frame count for the longest utterance, 80 ms frames;
    frames past an utterance's end are zero): [0] the input of the first Conformer layer (the subsampled
    log-mels, x-scaled, as NeMo's encoder feeds it), [l] the output of layer l; ``last_hidden_state``
    (the last layer's output) and the SUPERB task keys (same list).

    The expert's modules are the runner's preprocessor and encoder (the weights s3prl fine-tunes with -f);
    the runner, a plain object, is not a module.
    """

    def __init__(self, runner: StreamingEncoderRunner) -> None:
        super().__init__()
        if not runner.hidden_states:
            raise ValueError("StreamingNESTExpert needs a runner built with hidden_states=True")
        self.runner = runner
        self.preprocessor = runner.preprocessor
        self.encoder = runner.encoder

    @property
    def frame_samples(self) -> int:
        """Samples per encoder frame (1280 = 80 ms at 16 kHz in our configs)."""
        return self.runner.spec.subsampling_factor * self.runner.spec.geometry.hop_samples

    @property
    def chunk_ms(self) -> float:
        return self.runner.chunk_frames * self.runner.frame_ms

    def get_downsample_rates(self, key: str) -> int:
        return self.frame_samples

    def forward(self, wavs: list[Tensor]) -> dict[str, list[Tensor] | Tensor]:
        if not wavs or any(wav.dim() != 1 or wav.numel() == 0 for wav in wavs):
            raise ValueError("expected a non-empty list of non-empty 1-D waveforms [samples] at 16 kHz, got "
                             f"{[tuple(wav.shape) for wav in wavs]}")
        if torch.is_grad_enabled() or self.training:
            hidden = self.offline_batch(wavs)
        else:
            hidden = self.stream_batch(wavs)
        return {"hidden_states": hidden, "last_hidden_state": hidden[-1], **{key: hidden for key in TASK_KEYS}}

    def offline_batch(self, wavs: list[Tensor]) -> list[Tensor]:
        """NeMo's offline forward of the padded batch (gradients flow); per hidden state [B, T, D], zeros past
        each row's end."""
        padded = pad_sequence(wavs, batch_first=True)  # [B, S], zeros on the right
        lengths = torch.tensor([wav.shape[0] for wav in wavs], device=padded.device)
        features, feature_lengths = self.preprocessor(input_signal=padded, length=lengths)
        _, frames, hidden = encoder_hidden_states(self.encoder, features, feature_lengths)
        hidden = hidden[:, :, : int(frames.max())]  # (L+1, B, T, D)
        padding = torch.arange(hidden.shape[2], device=hidden.device) >= frames[:, None]  # (B, T)
        return list(hidden.masked_fill(padding[None, :, :, None], 0.0).unbind(0))

    @torch.no_grad()
    def stream_batch(self, wavs: list[Tensor]) -> list[Tensor]:
        """Streams all utterances together, one chunk of audio per feed, each ending with its own last piece.
        Returns per hidden state [B, T, D] (zeros past each row's end)."""
        runner = self.runner
        runner.refresh()  # the weights (-f fine-tuning steps) or the device may have changed since the last batch
        piece = runner.chunk_frames * self.frame_samples
        lengths = [wav.shape[0] for wav in wavs]
        state = runner.new_state(len(wavs), sample_rate=SAMPLE_RATE)
        calls = [runner.feed(state, [wav[start : start + piece] for wav in wavs],
                             last=[n <= start + piece for n in lengths])
                 for start in range(0, max(lengths), piece)]
        per_utterance = [out.hidden_states.transpose(0, 1) for out in join(calls)]  # (T_i, L+1, D)
        return list(pad_sequence(per_utterance, batch_first=True).permute(2, 0, 1, 3).unbind(0))
