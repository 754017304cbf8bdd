"""NeMo's own cache-aware streaming (``conformer_stream_step``) of a streaming CTC model, compared with offline.

This is NeMo's path, kept to measure it; for exact streaming use ``asr.streaming_ctc.StreamingCTCTranscriber``.
Known inexactness (measured; STREAMING_NEST.md, "Fine-tuning for ASR"): with zero lookahead its buffer
puts zero mel frames where the offline convolutions see real ones (log-probabilities off by ~1e-2 from
the second frame on, transcripts may differ), and it drops a last chunk too short for one frame.

Two facts of NeMo 2.5.3 that this module works around:

* With unlimited left context (``att_context_size [-1, r]``) the encoder's default ``max_context`` of
  10000 frames exceeds ``pos_emb_max_len`` (5000) and the first stream step crashes; we cap the cache.
* ``CacheAwareStreamingAudioBuffer.append_audio`` streams every frame of the preprocessor's output
  tensor, one padded frame past the valid length included, so the last chunk differs from the
  offline forward. We compute the features ourselves and append only the valid frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from nemo.collections.asr.models import EncDecCTCModel
from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

from .streaming_ctc import CTCTranscript, max_abs_log_prob_diff, offline_transcribe


@dataclass
class StreamingComparison:
    offline: CTCTranscript  # NeMo's model.transcribe
    streaming: CTCTranscript

    @property
    def common_frames(self) -> int:
        return min(len(self.offline.log_probs), len(self.streaming.log_probs))

    @property
    def max_abs_log_prob_diff(self) -> float:
        return max_abs_log_prob_diff(self.offline.log_probs, self.streaming.log_probs)


def encoder_frame_s(model: EncDecCTCModel) -> float:
    """Seconds per encoder frame: mel hop x subsampling (0.01 s x 8 = 80 ms for FastConformer)."""
    return float(model.cfg.preprocessor.window_stride) * model.encoder.subsampling_factor


def setup_cache_aware_streaming(model: EncDecCTCModel, longest_stream_s: float | None = None) -> None:
    """Put ``model`` in eval mode and set the encoder's streaming parameters for its default ``att_context_size``.

    With unlimited left context the attention cache is a fixed-size tensor that every step attends over:
    ``longest_stream_s`` sizes it to the longest stream (exact up to that length, and fast); without it
    the cache is as large as the positional encoding allows (``pos_emb_max_len`` frames, minus one chunk).
    The size is a whole number of chunks (r + 1 frames): any other size shifts the chunk boundaries of
    ``chunked_limited`` attention and the output drifts (measured: up to 2e-2 in log-probability).
    """
    model.eval()
    encoder = model.encoder
    left, right = encoder.att_context_size
    if left >= 0:
        encoder.setup_streaming_params()  # the cache is the left context
        return
    chunk_frames = right + 1
    if longest_stream_s is not None:
        max_context_frames = math.ceil((longest_stream_s / encoder_frame_s(model) + 1) / chunk_frames) * chunk_frames
    else:
        max_context_frames = (encoder.pos_emb_max_len // chunk_frames - 1) * chunk_frames
    encoder.setup_streaming_params(max_context=max_context_frames)


def _features(model: EncDecCTCModel, audio: torch.Tensor) -> torch.Tensor:
    """(samples,) waveform -> (1, features, valid frames): the model's own preprocessor, padding dropped."""
    signal = audio.reshape(1, -1).to(next(model.parameters()).device)
    features, length = model.preprocessor(input_signal=signal, length=torch.tensor([signal.shape[1]], device=signal.device))
    return features[..., : int(length[0])]


@torch.inference_mode()
def nemo_stream_transcribe(model: EncDecCTCModel, audio: torch.Tensor) -> CTCTranscript:
    """Stream ``audio`` (samples,) chunk by chunk through NeMo's buffer and ``model.conformer_stream_step``.

    Call ``setup_cache_aware_streaming(model)`` first. Chunks are NeMo's ``encoder.streaming_cfg`` ones:
    for ``att_context_size [l, r]`` each step emits r + 1 frames, (r + 1) x 80 ms of audio.
    """
    buffer = CacheAwareStreamingAudioBuffer(model)
    buffer.append_processed_signal(_features(model, audio))
    cache_channel, cache_time, cache_channel_len = model.encoder.get_initial_cache_state(batch_size=1)
    predictions, text, chunks = None, "", []
    for step, (chunk, chunk_lengths) in enumerate(buffer):
        (predictions, texts, cache_channel, cache_time, cache_channel_len, _, log_probs, _) = (
            model.conformer_stream_step(
                processed_signal=chunk,
                processed_signal_length=chunk_lengths,
                cache_last_channel=cache_channel,
                cache_last_time=cache_time,
                cache_last_channel_len=cache_channel_len,
                keep_all_outputs=buffer.is_buffer_empty(),
                previous_pred_out=predictions,
                drop_extra_pre_encoded=model.encoder.streaming_cfg.drop_extra_pre_encoded if step > 0 else 0,
                return_transcription=True,
                return_log_probs=True,
            )
        )
        text = texts[0].text  # NeMo's CTC decoding returns Hypothesis objects
        # predictions[0] holds every frame so far; the rows of this chunk are the new ones.
        new_frames = len(predictions[0]) - sum(len(c) for c in chunks)
        chunks.append(log_probs[0, :new_frames].cpu())
    return CTCTranscript(text, torch.cat(chunks))


def compare_nemo_streaming_with_offline(model: EncDecCTCModel, audio: torch.Tensor) -> StreamingComparison:
    """NeMo's ``model.transcribe`` and NeMo's cache-aware streaming of one utterance (samples,), side by side."""
    (offline,) = offline_transcribe(model, [audio])
    return StreamingComparison(offline, nemo_stream_transcribe(model, audio))
