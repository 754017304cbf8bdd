"""The streaming WavLM: one-shot forward (training, offline use) and exact chunked streaming.

Streaming emits a block of C = lookahead + 1 frames as soon as all of its frames exist (frame t needs
samples up to 320 t), runs the transformer on whole blocks only, and keeps a bounded state: per-conv
pending inputs, the positional conv's last kernel - 1 frames, per-layer keys/values of the last
window - 1 frames, and fewer than C frames plus fewer than 320 * C samples not yet used. Any split of
the input therefore gives the one-shot causal forward's frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor, nn

from nemo_streaming_ssl.core.kv_window import KeyValueWindow
from nemo_streaming_ssl.core.latency import FrameTiming, LatencyReport
from nemo_streaming_ssl.core.protocol import StreamOutput

from .config import SAMPLE_RATE, StreamingWavLMConfig
from .encoder import TransformerEncoder
from .frontend import FeatureExtractor


@dataclass
class StreamingState:
    """Everything a batch of streams carries between calls (see StreamingWavLM.feed).

    Every tensor in it is batch-first, so rows can be selected (e.g. to flush one utterance early).
    """

    batch_size: int
    sample_buffer: Tensor  # [B, s] samples received but not yet run through the front end
    conv_pending: list[Tensor | None]  # per front-end conv [B, P, C_in]: inputs later outputs still need
    pos_pending: Tensor | None  # [B, conv_pos - 1, D] last frames seen by the positional conv
    frame_buffer: Tensor  # [B, f < C, D] frames (positional term added) waiting for their block to complete
    kv_cache: list[KeyValueWindow | None]  # per layer keys/values of <= window - 1 frames (None: none yet)
    samples_seen: int = 0
    frames_emitted: int = 0
    finished: bool = field(default=False)

    def select(self, rows: list[int]) -> "StreamingState":
        """A copy keeping batch rows ``rows``: lets one utterance of a stream batch end (flush) on its own."""
        def pick(value):
            if isinstance(value, Tensor):
                return value[rows]
            if isinstance(value, KeyValueWindow):
                return value.select(rows, dim=1)  # [2, B, H, frames, head_dim]
            if isinstance(value, (list, tuple)):
                return type(value)(pick(v) for v in value)
            return value

        changes = {f.name: pick(getattr(self, f.name)) for f in fields(self) if f.name != "batch_size"}
        return replace(self, batch_size=len(rows), **changes)

    @property
    def kv_cache_frames(self) -> int:
        """Frames held by the largest per-layer KV cache."""
        return max((kv.frames for kv in self.kv_cache if kv is not None), default=0)


class StreamingWavLM(nn.Module):
    """WavLM with a causal front end and block-causal sliding-window attention (or non-causal, offline).

    State-dict keys are FocalCodec's WavLM v0.0.2 layout (STREAMING_WAVLM.md, "Architecture and checkpoint layout").
    """

    def __init__(self, cfg: StreamingWavLMConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = cfg or StreamingWavLMConfig()
        self.feature_extractor = FeatureExtractor(cfg.hidden_dims, cfg.kernel_sizes, cfg.strides, cfg.dropout)
        self.norm = nn.LayerNorm(cfg.hidden_dims[-1])
        self.feature_proj = nn.Linear(cfg.hidden_dims[-1], cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.encoder = TransformerEncoder(cfg)

    # ---------------------------------------------------------------- one-shot
    def frame_lengths(self, wav_lengths: Tensor) -> Tensor:
        """Output frames for each input length in samples ([B] ints -> [B] long)."""
        cfg = self.config
        lengths = wav_lengths.to(torch.long)
        if cfg.causal:
            return (lengths + cfg.hop_samples - 1) // cfg.hop_samples
        frames = lengths.clamp(min=cfg.receptive_field_samples)
        for kernel, stride in zip(cfg.kernel_sizes, cfg.strides):
            frames = (frames - kernel) // stride + 1
        return torch.where(lengths > 0, frames, torch.zeros_like(frames))

    def forward(self, wav: Tensor, wav_lengths: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        """wav: [B, S] float, right-padded; wav_lengths: [B] valid samples (None: all S).

        Returns (one [B, T, D] tensor per transformer layer, [B] valid frames). Causal: T = ceil(S / 320).
        Each utterance's valid frames equal those of the utterance alone; padded frames are zero.
        """
        cfg = self.config
        if wav.dim() != 2 or not wav.is_floating_point():
            raise ValueError(f"wav must be a float tensor [batch, samples], got {tuple(wav.shape)} {wav.dtype}")
        batch, samples = wav.shape
        limits = None
        if wav_lengths is not None:
            wav_lengths = torch.as_tensor(wav_lengths, device=wav.device).to(torch.long)
            if wav_lengths.shape != (batch,) or bool((wav_lengths < 0).any()) or bool((wav_lengths > samples).any()):
                raise ValueError(f"wav_lengths must be [{batch}] values in [0, {samples}], got {wav_lengths.tolist()}")
            # Padding content must not matter: zero it (the non-causal front end reads past the end).
            valid = torch.arange(samples, device=wav.device)[None, :] < wav_lengths[:, None]
            wav = wav.masked_fill(~valid, 0.0)
        if not cfg.causal and samples < cfg.receptive_field_samples:
            wav = nn.functional.pad(wav, (0, cfg.receptive_field_samples - samples))
        full = torch.full((batch,), samples, dtype=torch.long, device=wav.device)
        frame_lengths = self.frame_lengths(wav_lengths if wav_lengths is not None else full)
        features, _ = self.feature_extractor(wav, None, cfg.causal)
        x = self.dropout(self.feature_proj(self.norm(features)))
        if samples == 0:  # the non-causal front end ran on zero padding up to its receptive field
            x = x[:, :0]
        if wav_lengths is not None:
            limits = frame_lengths
            padded = torch.arange(x.shape[1], device=x.device)[None, :] >= limits[:, None]
            x = x.masked_fill(padded.unsqueeze(-1), 0.0)  # the non-causal positional conv sees both sides
        positional, _ = self.encoder.positional_embedding(x, None, cfg.causal)
        x = self.dropout(x + positional)
        hidden, _ = self.encoder(x, first_frame=0, frame_limits=limits, caches=None, keep_frames=0)
        return hidden, frame_lengths

    # ---------------------------------------------------------------- streaming (nemo_streaming_ssl.core.protocol)
    @property
    def timing(self) -> FrameTiming:
        return self.config.frame_timing

    @property
    def latency(self) -> LatencyReport:
        return self.timing.report(self.config.lookahead_size)

    def new_state(self, batch_size: int = 1, *, sample_rate: int) -> StreamingState:
        """A fresh batch of ``batch_size`` streams of audio at ``sample_rate`` (16 kHz) advancing together."""
        if not self.config.causal:
            raise ValueError("a non-causal model (causal: false) cannot stream; use forward() on whole utterances")
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"audio at {sample_rate} Hz, the model expects {SAMPLE_RATE} Hz: resample first")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        param = self.feature_proj.weight
        return StreamingState(
            batch_size=batch_size,
            sample_buffer=param.new_zeros(batch_size, 0),
            conv_pending=[None] * len(self.feature_extractor.layers),
            pos_pending=None,
            frame_buffer=param.new_zeros(batch_size, 0, self.config.dim),
            kv_cache=[None] * self.config.num_layers,
        )

    @torch.no_grad()
    def feed(self, state: StreamingState, pieces, *, last: bool | Sequence[bool] = False,
             valid_samples: Tensor | None = None) -> list[StreamOutput]:
        """Feed the next samples of every stream: ``pieces`` [B, s] (any s >= 0; also a list of B equal-length
        1-D pieces, or one 1-D piece for one stream). Returns per stream the frames that became final: whole
        blocks, or with ``last`` every frame left (the state is then spent).

        The streams of a state advance together, so ``last`` ends all of them (end some earlier with
        ``state.select``). valid_samples (with ``last``): [B] each stream's length in samples from its start
        (None: all samples seen), so rows ending at different points of the last piece end together: row b
        gets the frames before ceil(valid_samples[b] / 320) only, and no frame of it sees samples past its end
        (the front end is causal and the attention limits each row, as the one-shot forward with lengths
        does). No frame already emitted may lie past a row's end (ValueError), hence the piece: without
        ``last`` its blocks would be emitted unlimited.
        """
        self._check_stream(state)
        piece = self._as_batch(pieces, state)
        last = self._all_or_none(last, state)
        if not last:
            if valid_samples is not None:
                raise ValueError("valid_samples ends the streams: give it with last=True")
            self._take(piece, state)
            frames_available = math.ceil(state.samples_seen / self.config.hop_samples)
            if frames_available - state.frames_emitted < self.config.block_frames:
                return self._outputs(state.frames_emitted, self._no_frames(state))
            first_frame = state.frames_emitted
            return self._outputs(first_frame, self._advance(state, final=False))
        frame_limits = None
        if valid_samples is not None:
            valid_samples = torch.as_tensor(valid_samples).to(torch.long)
            samples_seen = state.samples_seen + piece.shape[-1]
            frame_limits = self.frame_lengths(valid_samples)
            if (valid_samples.shape != (state.batch_size,) or bool((valid_samples > samples_seen).any())
                    or bool((frame_limits < state.frames_emitted).any())):
                shortest = max(0, self.config.hop_samples * (state.frames_emitted - 1) + 1)  # no emitted frame past it
                raise ValueError(f"valid_samples must be [{state.batch_size}] lengths in [{shortest}, {samples_seen}] "
                                 f"samples ({state.frames_emitted} frames emitted), got {valid_samples.tolist()}")
        self._take(piece, state)
        first_frame = state.frames_emitted
        tail = self._advance(state, final=True, frame_limits=frame_limits)
        state.finished = True
        return self._outputs(first_frame, tail, frame_limits)

    def flush(self, state: StreamingState, *, valid_samples: Tensor | None = None) -> list[StreamOutput]:
        """End of stream: every frame not emitted yet (fewer than a block), as the one-shot forward gives it."""
        return self.feed(state, None, last=True, valid_samples=valid_samples)

    def _as_batch(self, pieces, state: StreamingState) -> Tensor:
        """The pieces of ``feed`` as one float tensor [B, s] (None: no samples)."""
        if pieces is None:
            return state.sample_buffer.new_zeros(state.batch_size, 0)
        if isinstance(pieces, (list, tuple)):
            if len({p.shape for p in pieces}) > 1:
                raise ValueError("the streams of one state advance together: give pieces of equal length, got "
                                 f"{[tuple(p.shape) for p in pieces]}")
            pieces = torch.stack(list(pieces))
        elif isinstance(pieces, Tensor) and pieces.dim() == 1 and state.batch_size == 1:
            pieces = pieces[None]
        if not isinstance(pieces, Tensor) or pieces.dim() != 2 or pieces.shape[0] != state.batch_size \
                or not pieces.is_floating_point():
            shape = tuple(pieces.shape) if isinstance(pieces, Tensor) else type(pieces).__name__
            raise ValueError(f"pieces must be a float tensor [{state.batch_size}, samples], got {shape}")
        return pieces

    @staticmethod
    def _all_or_none(last: bool | Sequence[bool], state: StreamingState) -> bool:
        if isinstance(last, bool):
            return last
        if len(last) != state.batch_size or len(set(last)) > 1:
            raise ValueError(f"the streams of one state end together: give last=True or False for all "
                             f"{state.batch_size} (end some earlier with state.select(rows)), got {list(last)}")
        return bool(last[0])

    def _outputs(self, first_frame: int, layers: list[Tensor], frame_limits: Tensor | None = None
                 ) -> list[StreamOutput]:
        """Per stream: layers (L x [B, t, D]) as StreamOutputs, each cut at its row's frame limit."""
        hidden = torch.stack(layers)  # [L, B, t, D]
        counts = [hidden.shape[2]] * hidden.shape[1] if frame_limits is None else \
            (frame_limits - first_frame).clamp(0, hidden.shape[2]).tolist()
        return [StreamOutput(first_frame, hidden[-1, b, :n], hidden[:, b, :n]) for b, n in enumerate(counts)]

    def _check_stream(self, state: StreamingState) -> None:
        if not self.config.causal:
            raise ValueError("a non-causal model (causal: false) cannot stream; use forward() on whole utterances")
        if state.finished:
            raise ValueError("this stream was flushed; start a new one with new_state()")

    def _take(self, piece: Tensor, state: StreamingState) -> None:
        """Append ``piece`` [B, s] to the samples waiting for the front end."""
        state.sample_buffer = torch.cat([state.sample_buffer, piece.to(state.sample_buffer)], dim=1)
        state.samples_seen += piece.shape[1]

    def _no_frames(self, state: StreamingState) -> list[Tensor]:
        empty = state.frame_buffer.new_zeros(state.batch_size, 0, self.config.dim)
        return [empty] * self.config.num_layers

    def _advance(self, state: StreamingState, final: bool, frame_limits: Tensor | None = None) -> list[Tensor]:
        """Run the front end on the buffered samples, then the layers on every complete block
        (and on the partial last block when ``final``). frame_limits: [B] frames per row (None: all)."""
        cfg = self.config
        features, state.conv_pending = self.feature_extractor(state.sample_buffer, state.conv_pending, True)
        state.sample_buffer = state.sample_buffer[:, :0]
        x = self.dropout(self.feature_proj(self.norm(features)))
        positional, state.pos_pending = self.encoder.positional_embedding(x, state.pos_pending, True)
        frames = torch.cat([state.frame_buffer, self.dropout(x + positional)], dim=1)
        ready = frames.shape[1] if final else frames.shape[1] // cfg.block_frames * cfg.block_frames
        state.frame_buffer = frames[:, ready:]
        if ready == 0:
            return self._no_frames(state)
        hidden, state.kv_cache = self.encoder(frames[:, :ready], first_frame=state.frames_emitted,
                                              frame_limits=frame_limits, caches=state.kv_cache,
                                              keep_frames=cfg.kv_cache_frames)
        state.frames_emitted += ready
        return hidden
