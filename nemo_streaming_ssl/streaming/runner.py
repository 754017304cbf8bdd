"""Cache-aware streaming inference for pretrained streaming NEST encoders.

``StreamingEncoderRunner`` takes raw audio in pieces of any size for a batch of streams and emits
encoder frames (and NEST token log-probabilities) as soon as they are final. Its output equals the
offline forward of the same model, chunk by chunk, because every step runs the encoder's own modules
(:func:`encoder_step`, NeMo's cache-aware path with masks for the new frames only) on exactly the
context the offline forward gives each frame:

* features: :class:`StreamingLogMel` (NeMo's log-mel numbers, frame by frame);
* subsampling: the causal striding convolutions get the real mel history before the chunk, never
  zeros: while fewer than ``history_mels`` frames exist, the step starts at mel frame 0 (so the
  convolutions pad exactly as offline) and drops the frames already emitted;
* attention: chunks are whole attention chunks (lookahead + 1 frames), so the chunk grid is the
  offline one; the cache holds the real left context only (it grows from empty);
* end of stream: the remaining mel frames go through one last, shorter step.

The caches live in :class:`StreamingState`, per stream; a step gathers the streams that are ready
into one batch.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from nemo.core import ModelPT
from nemo.core.classes.common import typecheck
from torch import nn

# Our .nemo files name our model class, which NeMo 3.0 checks against its `_target_` allow-list before it
# imports anything: importing our modules adds our prefix, so from_nemo (and hubconf) restore in any interpreter.
from .. import modules as _allow_our_targets  # noqa: F401
from ..core.fast_linear import use_fast_cpu_linears
from ..core.kv_window import KeyValueWindow
from ..core.latency import FrameTiming
from ..core.protocol import StreamOutput, cat_or_none
from ..receptive_field import ReceptiveField
from .attention import prepare_position_tables, use_key_value_cache
from .audio_input import as_mono_float, check_sample_rate
from .compat import NotStreamableError, StreamingSpec, streaming_spec
from .convolution import use_channels_last_convolution
from .encoder_step import encoder_step
from .features import StreamingLogMel
from .hidden_states import encoder_hidden_states
from .latency import LatencyReport, frame_timing
from .layer import use_lean_streaming_layers
from .state import EncoderStreamState, GroupCache, StepRecord, StreamingState, StreamState

log = logging.getLogger(__name__)


@dataclass
class TokenStreamOutput(StreamOutput):
    """A NEST stream's output: the shared fields, ``hidden_states`` (L+1, T, D) if asked (the first Conformer
    layer's input, then each layer's output, see hidden_states.py), and the token posteriors if asked."""

    # (T, C) or (T, C, H) NEST token log-probabilities per frame; row i is the model's prediction of token
    # first_token + i (token k = mel frames [8k, 8k+7]; negative: no token)
    log_probs: torch.Tensor | None = None
    first_token: int | None = None

    @classmethod
    def join(cls, parts: Sequence[TokenStreamOutput]) -> TokenStreamOutput:
        return replace(super().join(parts), log_probs=cat_or_none([p.log_probs for p in parts], 0))


class StreamingEncoderRunner:
    """Stream a streaming NEST model's encoder (and decoder) exactly.

    Args:
        model: a restored NeMo model with ``preprocessor``, ``encoder`` (and ``decoder`` for posteriors).
        chunk_frames: encoder frames per step, a multiple of the attention chunk (lookahead + 1);
            default one attention chunk. Alternatively ``chunk_ms``, or ``min_chunk_ms``: the fewest
            whole attention chunks that last at least this long (e.g. 10000 for an "offline" chunk).
        att_context_size: pick one of the encoder's ``att_context_size`` options (default: its first).
        max_left_context_frames: cache size for unlimited left context (``-1``). Output equals the
            offline forward for streams up to this many frames; longer streams keep running, each
            frame then seeing (at least) this many frames back. Default: the encoder's
            ``pos_emb_max_len`` (10240 frames = 819 s in our configs), rounded down to whole attention chunks.
        posteriors: also return the decoder's token log-probabilities per frame.
        hidden_states: also return every layer's frames (``TokenStreamOutput.hidden_states``).
        max_chunks_per_step: when a piece completes several chunks at once, they run as one encoder
            step (same output, less overhead), up to this many.
        device: where the runner's copy of the model runs (default: where ``model`` is).
        copy_model: stream a copy of the model's preprocessor, encoder and decoder (default), so that the
            streaming changes (module classes, weight layout, attention context, eval mode, device) never
            reach ``model``: its forward and any other runner on it stay as they were. The copy is a
            snapshot of the weights at construction and costs the model's memory once more. False: change
            ``model`` itself, for a model nothing else uses (``from_nemo`` does this).
    """

    def __init__(
        self,
        model,
        *,
        chunk_frames: int | None = None,
        chunk_ms: float | None = None,
        min_chunk_ms: float | None = None,
        att_context_size: Sequence[int] | None = None,
        max_left_context_frames: int | None = None,
        posteriors: bool = False,
        hidden_states: bool = False,
        max_chunks_per_step: int = 16,
        device: str | torch.device | None = None,
        copy_model: bool = True,
    ):
        self.model = model
        self.preprocessor, self.encoder, self.decoder = _streamed_modules(model, copy_model, device)
        if att_context_size is not None:
            self._select_att_context(list(att_context_size))
        self.spec: StreamingSpec = streaming_spec(self, name=type(model).__name__)
        self.device = next(self.encoder.parameters()).device
        self.features = StreamingLogMel.for_preprocessor(self.preprocessor)
        self.chunk_frames = self._resolve_chunk(chunk_frames, chunk_ms, min_chunk_ms)
        self.att_cache_frames = self._resolve_att_cache(max_left_context_frames)
        self.posteriors = posteriors
        self.hidden_states = hidden_states
        self.max_chunks_per_step = max(1, max_chunks_per_step)
        if posteriors:
            if self.decoder is None:
                raise NotStreamableError(f"{type(model).__name__} has no decoder: token posteriors are not available")
            with torch.inference_mode():  # (0, C[, H]): what a stream with no new frame gets
                probe = self.decoder(encoder_output=torch.zeros(1, self.spec.d_model, 1, device=self.device))
            self._no_log_probs = probe[0, :0]
        self.token_frame_offset = self._token_frame_offset()
        self.num_layers = len(self.encoder.layers)
        self.attention = use_key_value_cache(self.encoder)
        use_channels_last_convolution(self.encoder)
        use_lean_streaming_layers(self.encoder)
        for module in (self.encoder, self.decoder):
            if module is not None:
                use_fast_cpu_linears(module)
        _, conv_cache, _ = self.encoder.get_initial_cache_state(batch_size=1, device=self.device)
        self._conv_cache_shape = conv_cache[:, 0].shape  # (L, D, K-1)
        self._warned_sliding = False

    @classmethod
    def from_nemo(cls, path: str | Path, **kwargs) -> StreamingEncoderRunner:
        """Restore a ``.nemo`` (any ModelPT subclass with preprocessor + encoder) and wrap it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model_path {path}: no such file (a .nemo written by model.save_to)")
        model = ModelPT.restore_from(str(path), map_location=kwargs.get("device") or "cpu")
        return cls(model, copy_model=False, **kwargs)  # nobody else holds this model

    # ---------------------------------------------------------------- configuration

    def _select_att_context(self, att_context_size: list[int]) -> None:
        options = [list(a) for a in self.encoder.att_context_size_all]
        if att_context_size not in options:
            raise NotStreamableError(
                f"att_context_size {att_context_size} is not one this encoder was trained with: {options}"
            )
        self.encoder.set_default_att_context_size(att_context_size)

    def _token_frame_offset(self) -> int:
        """Encoder frame that predicts NEST token 0 (token k is predicted by frame k + offset)."""
        if not hasattr(self.model, "receptive_field"):  # stock NEST scores frame t against token t
            return 0
        field = ReceptiveField.from_att_context(
            self.encoder.att_context_size,
            self.encoder.att_context_style,
            self.encoder.subsampling_factor,
            len(self.encoder.layers),
        )
        return int(field.prediction_frame(torch.tensor(0)))

    @property
    def frame_ms(self) -> float:
        return 1000.0 * self.spec.subsampling_factor * self.spec.geometry.hop_samples / self.spec.sample_rate

    def allowed_chunk_ms(self, count: int = 4) -> list[float]:
        return [k * self.spec.att_chunk_frames * self.frame_ms for k in range(1, count + 1)]

    def _resolve_chunk(self, chunk_frames: int | None, chunk_ms: float | None, min_chunk_ms: float | None = None) -> int:
        step = self.spec.att_chunk_frames
        if sum(x is not None for x in (chunk_frames, chunk_ms, min_chunk_ms)) > 1:
            raise ValueError("give one of chunk_frames, chunk_ms, min_chunk_ms")
        if min_chunk_ms is not None:
            return step * max(1, math.ceil(min_chunk_ms / (step * self.frame_ms) - 1e-9))
        if chunk_ms is not None:
            frames = chunk_ms / self.frame_ms
            if abs(frames - round(frames)) > 1e-6:
                chunk_frames = -1  # reported below
            else:
                chunk_frames = round(frames)
        if chunk_frames is None:
            return step
        if chunk_frames < 1 or chunk_frames % step:
            asked = f"chunk_ms={chunk_ms}" if chunk_ms is not None else f"chunk_frames={chunk_frames}"
            raise ValueError(
                f"{asked}: a chunk must be whole attention chunks of {step} frames x {self.frame_ms:g} ms "
                f"(att_context_size {list(self.encoder.att_context_size)}); allowed chunk_ms: "
                + ", ".join(f"{v:g}" for v in self.allowed_chunk_ms())
                + ", ..."
            )
        return chunk_frames

    def _resolve_att_cache(self, max_left_context_frames: int | None) -> int:
        left = self.spec.left_context_frames
        if left >= 0:
            if max_left_context_frames is not None:
                raise ValueError(
                    f"max_left_context_frames applies to unlimited left context; this model's is {left} frames"
                )
            return left
        step = self.spec.att_chunk_frames
        if max_left_context_frames is None:
            max_left_context_frames = self.encoder.pos_emb_max_len
        frames = max_left_context_frames - max_left_context_frames % step
        if frames < step:
            raise ValueError(f"max_left_context_frames must be at least one attention chunk ({step} frames)")
        return frames

    def refresh(self) -> None:
        """Call after the weights or the device of the streamed modules changed (fine-tuning steps, ``.to()``):
        re-reads the device and drops the position tables projected with the old weights."""
        self.device = next(self.encoder.parameters()).device
        for attention in self.attention:
            attention.position_table = None

    @property
    def timing(self) -> FrameTiming:
        return frame_timing(
            self.spec.geometry,
            sample_rate=self.spec.sample_rate,
            subsampling_factor=self.spec.subsampling_factor,
            chunk_frames=self.chunk_frames,
        )

    @property
    def latency(self) -> LatencyReport:
        return self.timing.report(self.spec.lookahead_frames)

    # ---------------------------------------------------------------- streaming API

    def new_state(self, batch_size: int = 1, *, sample_rate: int) -> StreamingState:
        """State for ``batch_size`` independent streams of audio at ``sample_rate`` (must be the model's)."""
        check_sample_rate(sample_rate, self.spec.sample_rate)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return StreamingState(streams=[self._new_stream() for _ in range(batch_size)], sample_rate=sample_rate)

    def _new_stream(self) -> StreamState:
        mels = self.features.num_mels
        return StreamState(
            features=self.features.new_state(self.device),
            encoder=EncoderStreamState(
                pending_mels=torch.zeros(mels, 0, device=self.device),
                history_mels=torch.zeros(mels, 0, device=self.device),
                att_cache=KeyValueWindow(
                    self.att_cache_frames, torch.zeros(self.num_layers, *self._att_cache_shape(0), device=self.device)
                ),
                conv_cache=torch.zeros(self._conv_cache_shape, device=self.device),
            ),
        )

    @torch.inference_mode()
    def feed(self, state: StreamingState, pieces, *, last: bool | Sequence[bool] = False) -> list[TokenStreamOutput]:
        """Add audio to each stream; return, per stream, the encoder frames that became final.

        Args:
            pieces: one piece per stream (1-D float samples at the state's sample rate; None or empty
                for a stream with nothing new), as a list or as the rows of a (B, s) tensor, or a single
                1-D piece when the batch has one stream.
            last: True (or per stream) when this is the end of the stream: its remaining frames follow.
        """
        if isinstance(pieces, torch.Tensor) and pieces.dim() == 2 and pieces.shape[0] == state.batch_size:
            pieces = list(pieces)
        elif isinstance(pieces, torch.Tensor) and pieces.dim() == 1 or not isinstance(pieces, (list, tuple)):
            pieces = [pieces]
        if len(pieces) != state.batch_size:
            raise ValueError(f"got {len(pieces)} pieces for a batch of {state.batch_size} streams")
        last = [last] * state.batch_size if isinstance(last, bool) else list(last)
        if len(last) != state.batch_size:
            raise ValueError(f"got {len(last)} end-of-stream flags for a batch of {state.batch_size} streams")
        # Check everything before touching the state: a bad piece leaves every stream as it was.
        samples = [as_mono_float(p, b, s.features.num_samples) for b, (p, s) in enumerate(zip(pieces, state.streams))]
        for b, (stream, piece) in enumerate(zip(state.streams, samples)):
            if stream.ended and piece.numel():
                raise ValueError(f"stream {b} has ended; start a new state for new audio")
        start = time.perf_counter()
        for stream, piece, is_last in zip(state.streams, samples, last):
            if stream.ended:
                continue
            mels = self.features.push(stream.features, piece)
            if is_last:
                mels = torch.cat([mels, self.features.finish(stream.features)], dim=1)
                stream.ended = True
            stream.encoder.pending_mels = torch.cat([stream.encoder.pending_mels, mels], dim=1)
        state.feature_seconds += time.perf_counter() - start
        return self._run_ready_steps(state)

    def flush(self, state: StreamingState) -> list[TokenStreamOutput]:
        """End every stream: emit the remaining frames exactly as the offline forward would."""
        return self.feed(state, [None] * state.batch_size, last=True)

    # ---------------------------------------------------------------- stepping

    def _needed_mels(self, enc: EncoderStreamState, chunks: int) -> int:
        """Mel frames that ``chunks`` full chunks consume: the first chunk ends at mel f*(n-1), later ones take f*n."""
        f, n = self.spec.subsampling_factor, self.chunk_frames
        return 1 + f * (chunks * n - 1) if enc.steps == 0 else f * chunks * n

    def _ready_chunks(self, enc: EncoderStreamState) -> int:
        """Full chunks whose mel frames are all pending (several arrive at once with large pieces)."""
        have, first = enc.pending_mels.shape[1], self._needed_mels(enc, 1)
        if have < first:
            return 0
        later = self.spec.subsampling_factor * self.chunk_frames
        return min(1 + (have - first) // later, self.max_chunks_per_step)

    def _run_ready_steps(self, state: StreamingState) -> list[TokenStreamOutput]:
        emitted: list[list[TokenStreamOutput]] = [[] for _ in state.streams]
        state.last_steps = []
        while True:
            # Streams that can step together: same frames dropped from the history, same number of chunks
            # (0: the short last chunk of an ended stream).
            groups: dict[tuple[int, int], list[int]] = defaultdict(list)
            for b, stream in enumerate(state.streams):
                if stream.done:
                    continue
                enc = stream.encoder
                chunks = self._ready_chunks(enc)
                if chunks or (stream.ended and enc.pending_mels.shape[1] > 0):
                    groups[(self._drop_frames(enc), chunks)].append(b)
                elif stream.ended:
                    stream.done = True
            if not groups:
                break
            for (drop, chunks), members in groups.items():
                for b, out in zip(members, self._step(state, members, drop, chunks)):
                    emitted[b].append(out)
        return [self._join(outs, state.streams[b]) for b, outs in enumerate(emitted)]

    def _drop_frames(self, enc: EncoderStreamState) -> int:
        """Encoder frames computed from the mel history that were emitted before (so dropped)."""
        start_mel = enc.mels_consumed - enc.history_mels.shape[1]
        return enc.frames_emitted - start_mel // self.spec.subsampling_factor

    def _step(self, state: StreamingState, members: list[int], drop: int, chunks: int) -> list[TokenStreamOutput]:
        """``chunks`` chunks (0: the short last one) for the streams ``members``, which share ``drop``."""
        start = time.perf_counter()
        encs = [state.streams[b].encoder for b in members]
        takes = [min(self._needed_mels(e, max(chunks, 1)), e.pending_mels.shape[1]) for e in encs]
        step_frames = max(chunks, 1) * self.chunk_frames
        inputs = [torch.cat([e.history_mels, e.pending_mels[:, :t]], dim=1) for e, t in zip(encs, takes)]
        lengths = torch.tensor([x.shape[1] for x in inputs], device=self.device)
        signal = torch.zeros(len(members), self.features.num_mels, int(lengths.max()), device=self.device)
        for i, x in enumerate(inputs):
            signal[i, :, : x.shape[1]] = x

        # Attention cache: each stream's keys/values right-aligned (shorter ones padded in front and
        # masked); every length is whole attention chunks, which keeps the chunk grid of the offline mask.
        valid = [e.att_cache.frames for e in encs]
        cache_frames = max(valid)
        if len(encs) == 1:
            att_cache = encs[0].att_cache.view().unsqueeze(1)
        else:
            att_cache = self._group_cache(state, members, encs, valid, step_frames).window.view()
        conv_cache = torch.stack([e.conv_cache for e in encs], dim=1)
        prepare_position_tables(self.encoder, self.attention, cache_frames + step_frames)

        encoded, encoded_len, att_next, conv_next, hidden = encoder_step(
            self.encoder,
            signal,
            lengths,
            drop,
            att_cache,
            torch.tensor(valid, device=self.device),
            conv_cache,
            keep_hidden=self.hidden_states,
        )
        if self.posteriors:
            with typecheck.disable_checks():  # NeMo's per-call type checks cost more than a small chunk's compute
                log_probs = self.decoder(encoder_output=encoded)
        else:
            log_probs = None

        outputs, frames = [], []
        for i, (b, e, take, x) in enumerate(zip(members, encs, takes, inputs)):
            n = int(encoded_len[i])
            outputs.append(
                self._output(
                    e.frames_emitted,
                    encoded[i, :, :n].T,
                    None if log_probs is None else log_probs[i, :n],
                    None if hidden is None else hidden[:, i, :n],
                )
            )
            frames.append(n)
            if valid[i] + n > self.att_cache_frames and self.spec.left_context_frames < 0:
                self._warn_sliding()
            e.att_cache.append(att_next[:, i, :, :n])
            e.conv_cache = conv_next[:, i].clone()
            e.mels_consumed += take
            e.history_mels = x[:, x.shape[1] - min(e.mels_consumed, self.spec.history_mels) :]
            e.pending_mels = e.pending_mels[:, take:]
            e.frames_emitted += n
            e.steps += 1
            stream = state.streams[b]
            if stream.ended and e.pending_mels.shape[1] == 0:
                stream.done = True
        if len(encs) > 1 and len(set(frames)) == 1:  # keep the batched copy in step (else rebuilt when next used)
            state.group_cache.window.append(att_next[:, :, :, : frames[0]])
            state.group_cache.appended = [e.att_cache.appended for e in encs]
        seconds = time.perf_counter() - start
        state.last_steps.append(StepRecord(streams=list(members), frames=frames, seconds=seconds))
        state.num_steps += 1
        state.encoder_seconds += seconds
        return outputs

    def _att_cache_shape(self, frames: int) -> tuple[int, int, int]:
        """One layer's attention cache of one stream: (heads, frames, 2 * d_head), keys | values."""
        heads = self.attention[0].h
        return heads, frames, 2 * self.attention[0].d_k

    def _group_cache(
        self, state: StreamingState, members: list[int], encs: list[EncoderStreamState], valid: list[int], step_frames: int
    ) -> GroupCache:
        """The batched attention caches of ``members`` (encoder states ``encs``, ``valid`` cached frames each):
        the latest step's if these streams made it and nothing changed since, else rebuilt from each
        stream's own window (see GroupCache)."""
        appended = [e.att_cache.appended for e in encs]
        group = state.group_cache
        if group is not None and group.members == members and group.appended == appended:
            return group
        frames = max(valid)
        heads, _, width = self._att_cache_shape(0)
        capacity = frames + KeyValueWindow.room(self.att_cache_frames, step_frames)
        shape = (self.num_layers, len(encs), heads, capacity, width)
        # Reuse the stale copy's memory: a fresh tensor of this size (up to L x B x left context x 2D
        # floats) at every step of irregularly fed streams costs more in page faults than the step.
        old = None if group is None else group.window.buffer
        if old is not None and old.is_contiguous() and old.numel() >= math.prod(shape):
            buffer = old.view(-1)[: math.prod(shape)].view(shape)
        else:
            buffer = torch.empty(shape, device=self.device)
        for i, (e, c) in enumerate(zip(encs, valid)):
            buffer[:, i, :, : frames - c].zero_()
            buffer[:, i, :, frames - c : frames] = e.att_cache.view()
        state.group_cache = GroupCache(list(members), KeyValueWindow(self.att_cache_frames, buffer, frames), appended)
        return state.group_cache

    def _warn_sliding(self) -> None:
        if not self._warned_sliding:
            log.warning(
                "stream longer than max_left_context_frames=%d (%g s): the unlimited left context now slides; "
                "frames from here on differ from the offline forward of the whole stream",
                self.att_cache_frames,
                self.att_cache_frames * self.frame_ms / 1000,
            )
            self._warned_sliding = True

    def _output(
        self, first_frame: int, frames: torch.Tensor, log_probs: torch.Tensor | None, hidden: torch.Tensor | None = None
    ) -> TokenStreamOutput:
        first_token = first_frame - self.token_frame_offset if self.posteriors else None
        return TokenStreamOutput(
            first_frame=first_frame, frames=frames, log_probs=log_probs, first_token=first_token, hidden_states=hidden
        )

    def _join(self, outs: list[TokenStreamOutput], stream: StreamState) -> TokenStreamOutput:
        if not outs:
            empty = torch.zeros(0, self.spec.d_model, device=self.device)
            log_probs = self._no_log_probs if self.posteriors else None
            hidden = empty.expand(self.num_layers + 1, 0, -1) if self.hidden_states else None
            return self._output(stream.encoder.frames_emitted, empty, log_probs, hidden)
        return TokenStreamOutput.join(outs)

    # ---------------------------------------------------------------- reference

    @torch.inference_mode()
    def offline(self, audio: torch.Tensor) -> TokenStreamOutput:
        """The offline forward of the same model on a whole signal (samples,): the streaming target."""
        audio = as_mono_float(audio, 0, 0).to(self.device)
        length = torch.tensor([audio.numel()], device=self.device)
        feats, feat_len = self.preprocessor(input_signal=audio[None], length=length)
        if self.hidden_states:  # NeMo's forward, with hooks on its layers
            encoded, encoded_len, hidden = encoder_hidden_states(self.encoder, feats, feat_len)
        else:
            (encoded, encoded_len), hidden = self.encoder(audio_signal=feats, length=feat_len), None
        n = int(encoded_len[0])
        log_probs = self.decoder(encoder_output=encoded)[0, :n] if self.posteriors else None
        return self._output(0, encoded[0, :, :n].T, log_probs, None if hidden is None else hidden[:, 0, :n])


def _streamed_modules(model, copy_model: bool, device) -> tuple[nn.Module, nn.Module, nn.Module | None]:
    """(preprocessor, encoder, decoder or None) of ``model`` for the runner: copies unless ``copy_model`` is
    False, in eval mode, on ``device``. One deepcopy keeps weights the encoder and decoder share shared."""
    preprocessor, encoder, decoder = model.preprocessor, model.encoder, getattr(model, "decoder", None)
    if copy_model:
        encoder, decoder = copy.deepcopy((encoder, decoder))
        # Built anew from its config, not deep-copied: NeMo's FilterbankFeatures keeps its forward as an
        # instance attribute bound to the original, so a copy would run the original (dither in train mode).
        preprocessor = model.from_config_dict(model.cfg.preprocessor)
        preprocessor.load_state_dict(model.preprocessor.state_dict())
    modules = (preprocessor, encoder, decoder)
    return tuple(None if m is None else (m if device is None else m.to(device)).eval() for m in modules)
