"""Exact streaming transcription with a fine-tuned CTC model: ``StreamingEncoderRunner`` + incremental greedy CTC.

NeMo's own cache-aware path (``asr.streaming``, ``conformer_stream_step``) is not exact with zero lookahead
(its buffer puts zero mel frames where the offline convolutions see real ones) and its buffer may drop the
last short chunk. Here the model's preprocessor, encoder and CTC decoder run through
:class:`~nemo_streaming_ssl.streaming.StreamingEncoderRunner`, whose log-probabilities equal the offline
forward's for every ``att_context_size``, and greedy CTC decoding runs on each chunk as its frames become
final. The transcript at the end of the stream is the string NeMo's ``model.transcribe`` returns.

    transcriber = StreamingCTCTranscriber.from_nemo("ctc.nemo", chunk_ms=400)
    state = transcriber.new_state(batch_size=1, sample_rate=16000)
    for piece in microphone():                           # any piece sizes
        update = transcriber.feed(state, piece)[0]       # update.new_text: what the new frames added
    update = transcriber.flush(state)[0]                 # update.text: the whole transcript
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from nemo.collections.asr.models import ASRModel, EncDecCTCModel
from nemo.collections.asr.parts.submodules.ctc_greedy_decoding import GreedyBatchedCTCInfer, GreedyCTCInfer

from nemo_streaming_ssl.streaming import StreamingEncoderRunner, StreamingState
from nemo_streaming_ssl.streaming.audio_input import as_mono_float


@dataclass
class CTCTranscript:
    text: str
    log_probs: torch.Tensor  # (frames, vocabulary + 1): CTC log-probabilities, one row per encoder frame, blank last


def max_abs_log_prob_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b| over the frames both have (NeMo's own streaming may end a frame early); 0 if none."""
    n = min(len(a), len(b))
    return float((a[:n] - b[:n]).abs().max()) if n else 0.0


@dataclass
class GreedyCTCState:
    """Greedy CTC decoding of one stream: all a new frame needs from the past, and the transcript so far."""

    previous_id: int  # most likely class of the last frame (blank before the first): repeating it adds no token
    token_ids: list[int] = field(default_factory=list)  # tokens so far: blanks dropped, repeats folded
    text: str = ""  # token_ids written as NeMo writes them
    frames: int = 0  # frames decoded so far


@dataclass
class TranscriptUpdate:
    """What one stream's transcript gained in one ``feed``/``flush`` call."""

    first_frame: int  # encoder frame of log_probs[0]
    log_probs: torch.Tensor  # (T, vocabulary + 1) CTC log-probabilities of the new frames, blank last; T may be 0
    token_ids: list[int]  # tokens the new frames added
    text: str  # the whole transcript so far
    new_text: str  # append this to the previous text, after removing its last `replaced_chars` characters
    replaced_chars: int = 0  # 0 unless a token rewrites the text before it (NeMo drops a space before punctuation)


@dataclass
class StreamedChunk:
    """One emitted chunk of a stream fed piece by piece (``StreamingCTCTranscriber.transcribe``)."""

    update: TranscriptUpdate
    audio_s: float  # audio received when the chunk left
    compute_s: float  # time spent in feed() since the previous chunk left (feature work on earlier pieces included)
    latency_s: float  # wait of the chunk's oldest audio (frame t stands for (t-1) x frame .. t x frame) + compute_s


@dataclass
class StreamedTranscript(CTCTranscript):
    token_ids: list[int] = field(default_factory=list)
    chunks: list[StreamedChunk] = field(default_factory=list)

    @property
    def compute_s(self) -> float:
        return sum(chunk.compute_s for chunk in self.chunks)


@dataclass
class TranscriptionState:
    """Streaming state of a batch of streams: the encoder's (caches, buffers) and the decoder's, per stream."""

    encoder: StreamingState
    decoding: list[GreedyCTCState]


def require_greedy_ctc(model) -> None:
    """Refuse models whose ``transcribe`` text greedy CTC decoding would not reproduce."""
    if not isinstance(model, EncDecCTCModel):
        raise ValueError(
            f"{type(model).__name__} is not a CTC model: streaming transcription needs NeMo's EncDecCTCModel or "
            "EncDecCTCModelBPE (the .nemo written by examples/asr/speech_to_text_finetune/finetune_streaming_ctc.py)"
        )
    infer = model.decoding.decoding
    if not isinstance(infer, (GreedyCTCInfer, GreedyBatchedCTCInfer)) or getattr(infer, "fusion_models", None):
        strategy = model.cfg.decoding.get("strategy")
        raise ValueError(
            f"decoding.strategy={strategy!r} (or a language model fused into greedy decoding): streaming transcription "
            "decodes greedily, frame by frame; set decoding.strategy=greedy_batch without ngram_lm_model/boosting_tree, "
            "e.g. model.change_decoding_strategy(OmegaConf.create({'strategy': 'greedy_batch'}))"
        )


class IncrementalGreedyCTC:
    """NeMo's greedy CTC decoding, one chunk of frames at a time.

    Greedy CTC takes each frame's most likely class, drops blanks and counts a class repeated on
    consecutive frames once (NeMo's ``decode_hypothesis``). A new frame only needs the class of the frame
    before it, so decoding chunk by chunk gives the same tokens as decoding the whole utterance. The text is
    written by the model's own decoding object (``decode_tokens_to_str_with_strip_punctuation``: characters
    joined, or SentencePiece pieces detokenized, then NeMo's punctuation spacing), from all tokens so far:
    a token may change how the text before it reads (a space before punctuation is removed), so the text is
    not always the previous text plus something. Rewriting it costs time in proportion to the transcript, at
    chunks that add a token.
    """

    def __init__(self, decoding):
        self.decoding = decoding  # the model's CTCDecoding / CTCBPEDecoding
        self.blank_id = decoding.blank_id

    def new_state(self) -> GreedyCTCState:
        return GreedyCTCState(previous_id=self.blank_id)

    def update(self, state: GreedyCTCState, log_probs: torch.Tensor) -> tuple[list[int], str, int]:
        """Decode ``log_probs`` (T, vocabulary + 1), the frames after ``state.frames``; return the new token ids,
        the text to append and how many characters of the previous text it replaces."""
        new_ids = []
        # .max like NeMo's greedy decoders: on a tie the first class wins
        for class_id in log_probs.max(dim=-1).indices.tolist():
            if class_id != self.blank_id and class_id != state.previous_id:
                new_ids.append(class_id)
            state.previous_id = class_id
        state.frames += len(log_probs)
        if not new_ids:
            return [], "", 0
        state.token_ids.extend(new_ids)
        previous, text = state.text, self.decoding.decode_tokens_to_str_with_strip_punctuation(state.token_ids)
        common = len(os.path.commonprefix([previous, text]))
        state.text = text
        return new_ids, text[common:], len(previous) - common


class StreamingCTCTranscriber:
    """Stream audio through a CTC model and transcribe it as frames become final, exactly as offline.

    Args:
        model: a NeMo ``EncDecCTCModel`` / ``EncDecCTCModelBPE`` whose encoder streams (causal subsampling and
            convolutions, finite lookahead), decoding greedily (its default).
        chunk_ms / chunk_frames, att_context_size, max_left_context_frames, max_chunks_per_step, device,
            copy_model: as for :class:`StreamingEncoderRunner` (chunks are whole attention chunks; by default
            the runner streams a copy of the model, which stays as it was).
    """

    def __init__(
        self,
        model,
        *,
        chunk_ms: float | None = None,
        chunk_frames: int | None = None,
        att_context_size: Sequence[int] | None = None,
        max_left_context_frames: int | None = None,
        max_chunks_per_step: int = 16,
        device: str | torch.device | None = None,
        copy_model: bool = True,
    ):
        require_greedy_ctc(model)
        self.model = model
        self.runner = StreamingEncoderRunner(
            model,
            chunk_ms=chunk_ms,
            chunk_frames=chunk_frames,
            att_context_size=att_context_size,
            max_left_context_frames=max_left_context_frames,
            posteriors=True,
            max_chunks_per_step=max_chunks_per_step,
            device=device,
            copy_model=copy_model,
        )
        self.greedy = IncrementalGreedyCTC(model.decoding)

    @classmethod
    def from_nemo(cls, path: str | Path, **kwargs) -> StreamingCTCTranscriber:
        """Restore a CTC ``.nemo`` and stream it in place (the transcriber is its only user)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model_path {path}: no such file (the .nemo written by finetune_streaming_ctc.py)")
        model = ASRModel.restore_from(str(path), map_location=kwargs.get("device") or "cpu").eval()
        return cls(model, copy_model=False, **kwargs)

    @property
    def att_context_size(self) -> list[int]:
        return list(self.runner.encoder.att_context_size)

    @property
    def frame_s(self) -> float:
        return self.runner.frame_ms / 1000

    def new_state(self, batch_size: int = 1, *, sample_rate: int) -> TranscriptionState:
        encoder = self.runner.new_state(batch_size, sample_rate=sample_rate)
        return TranscriptionState(encoder, [self.greedy.new_state() for _ in range(batch_size)])

    def feed(self, state: TranscriptionState, pieces, *, last: bool | Sequence[bool] = False) -> list[TranscriptUpdate]:
        """Add audio to each stream (as ``StreamingEncoderRunner.feed``); per stream, what its transcript gained."""
        outputs = self.runner.feed(state.encoder, pieces, last=last)
        updates = []
        for out, decoding in zip(outputs, state.decoding):
            new_ids, new_text, replaced = self.greedy.update(decoding, out.log_probs)
            updates.append(TranscriptUpdate(out.first_frame, out.log_probs, new_ids, decoding.text, new_text, replaced))
        return updates

    def flush(self, state: TranscriptionState) -> list[TranscriptUpdate]:
        """End every stream: the last frames, and the final transcripts."""
        return self.feed(state, [None] * state.encoder.batch_size, last=True)

    def transcribe(
        self,
        audio: torch.Tensor,
        *,
        sample_rate: int,
        piece_samples: int | None = None,
        on_chunk: Callable[[StreamedChunk], None] | None = None,
    ) -> StreamedTranscript:
        """Stream one signal (samples,) in pieces of ``piece_samples`` (default one chunk), as a microphone
        would deliver it; ``on_chunk`` sees each chunk as it leaves."""
        audio = as_mono_float(audio, 0, 0)
        if piece_samples is None:
            piece_samples = round(self.runner.latency.chunk_ms * sample_rate / 1000)
        if piece_samples < 1:
            raise ValueError(f"piece_samples must be >= 1, got {piece_samples}")
        state = self.new_state(1, sample_rate=sample_rate)
        chunks, log_probs, compute_s = [], [], 0.0
        for start in range(0, max(audio.numel(), 1), piece_samples):
            end = min(start + piece_samples, audio.numel())
            began = time.perf_counter()
            (update,) = self.feed(state, audio[start:end], last=end >= audio.numel())
            compute_s += time.perf_counter() - began
            log_probs.append(update.log_probs)  # (0, C) when nothing left: keeps torch.cat defined for empty audio
            if not len(update.log_probs):
                continue
            audio_s = end / sample_rate
            oldest_s = max(update.first_frame - 1, 0) * self.frame_s
            chunk = StreamedChunk(update, audio_s, compute_s, audio_s - oldest_s + compute_s)
            chunks.append(chunk)
            compute_s = 0.0
            if on_chunk is not None:
                on_chunk(chunk)
        decoding = state.decoding[0]
        return StreamedTranscript(decoding.text, torch.cat(log_probs).cpu(), list(decoding.token_ids), chunks)

    def offline(self, audios: Sequence[torch.Tensor]) -> list[CTCTranscript]:
        """NeMo's offline ``transcribe`` of the caller's model, in this transcriber's attention context."""
        return offline_transcribe(self.model, audios, att_context_size=self.att_context_size)


@contextmanager
def attention_context(encoder, att_context_size: Sequence[int] | None):
    """Run ``encoder`` in ``att_context_size`` (one of its trained pairs), then restore its default."""
    before = list(encoder.att_context_size)
    if att_context_size is None or list(att_context_size) == before:
        yield  # switching resets NeMo's streaming parameters (setup_streaming_params): only when needed
        return
    if list(att_context_size) not in [list(a) for a in encoder.att_context_size_all]:
        raise ValueError(f"att_context_size {list(att_context_size)} is not one of {encoder.att_context_size_all}")
    encoder.set_default_att_context_size(list(att_context_size))
    try:
        yield
    finally:
        encoder.set_default_att_context_size(before)


def offline_transcribe(
    model: EncDecCTCModel, audios: Sequence[torch.Tensor], *, att_context_size: Sequence[int] | None = None
) -> list[CTCTranscript]:
    """NeMo's ``model.transcribe`` of each signal (samples,) at the model's sample rate: text and log-probs.

    One utterance per batch: nothing is padded, so each result is the model's forward on that utterance alone.
    Every module's train/eval mode is restored afterwards: NeMo 2.5.3's ``transcribe`` ends with
    ``encoder.unfreeze()`` / ``decoder.unfreeze()``, which put them in train mode whatever mode they were in
    (dropout on, and a multi-latency encoder drawing a random attention context at each forward).
    """
    modes = [(module, module.training) for module in model.modules()]
    try:
        with attention_context(model.encoder, att_context_size):
            hypotheses = model.transcribe(
                [as_mono_float(a, i, 0).cpu().numpy() for i, a in enumerate(audios)],
                batch_size=1,
                return_hypotheses=True,
                verbose=False,
            )
    finally:
        for module, training in modes:
            module.training = training
    return [CTCTranscript(h.text, h.y_sequence.cpu()) for h in hypotheses]
