"""The streaming WavLM: one-shot forward (training, offline use) and exact chunked streaming.

Streaming emits a block of C = lookahead + 1 frames as soon as all of its frames exist (frame t needs
samples up to 320 t), runs the transformer on whole blocks only, and keeps a bounded state: per-conv
pending inputs, the positional conv's last kernel - 1 frames, per-layer keys/values of the last
window - 1 frames, and fewer than C frames plus fewer than 320 * C samples not yet used. Any split of
the input therefore gives the one-shot causal forward's frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor, nn

from .config import StreamingWavLMConfig
from nemo_streaming_ssl.core.kv_window import KeyValueWindow

from .encoder import TransformerEncoder
from .frontend import FeatureExtractor


@dataclass
class StreamingState:
    """Everything a stream carries between calls (one object per stream batch; see StreamingWavLM.stream).

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

    # ---------------------------------------------------------------- streaming
    def init_state(self, batch_size: int = 1) -> StreamingState:
        """A fresh stream of ``batch_size`` utterances advancing together."""
        if not self.config.causal:
            raise ValueError("a non-causal model (causal: false) cannot stream; use forward() on whole utterances")
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
    def stream(self, piece: Tensor, state: StreamingState) -> tuple[list[Tensor], StreamingState]:
        """Feed ``piece`` [B, s] (any s >= 0). Returns (per layer [B, t, D] newly final frames, state);
        t is a multiple of the block size (possibly 0). The state is updated in place and returned."""
        self._check_stream(state)
        self._take(piece, state)
        cfg = self.config
        frames_available = math.ceil(state.samples_seen / cfg.hop_samples)
        if frames_available - state.frames_emitted < cfg.block_frames:
            return self._no_frames(state), state
        return self._advance(state, final=False), state

    @torch.no_grad()
    def flush(self, state: StreamingState, piece: Tensor | None = None, valid_samples: Tensor | None = None
              ) -> tuple[list[Tensor], StreamingState]:
        """End of stream: feed the last samples ``piece`` [B, s] (None: none) and return (per layer [B, t, D]
        every frame not emitted yet, state); t < C without a piece. The state is spent.

        valid_samples: [B] each row's utterance length in samples from the stream start (None: all samples
        seen), so rows ending at different points of ``piece`` flush together: row b's frames from
        ceil(valid_samples[b] / 320) on are zero and no valid frame sees them (the front end is causal and
        the attention limits each row, as the one-shot forward with lengths does). No frame already emitted
        may lie past a row's end (ValueError), hence the piece: stream() would emit its blocks unlimited.
        """
        self._check_stream(state)
        frame_limits = None
        if valid_samples is not None:
            valid_samples = torch.as_tensor(valid_samples).to(torch.long)
            samples_seen = state.samples_seen + (0 if piece is None else piece.shape[-1])
            frame_limits = self.frame_lengths(valid_samples)
            if (valid_samples.shape != (state.batch_size,) or bool((valid_samples > samples_seen).any())
                    or bool((frame_limits < state.frames_emitted).any())):
                shortest = max(0, self.config.hop_samples * (state.frames_emitted - 1) + 1)  # no emitted frame past it
                raise ValueError(f"valid_samples must be [{state.batch_size}] lengths in [{shortest}, {samples_seen}] "
                                 f"samples ({state.frames_emitted} frames emitted), got {valid_samples.tolist()}")
        if piece is not None:
            self._take(piece, state)
        tail = self._advance(state, final=True, frame_limits=frame_limits)
        state.finished = True
        return tail, state

    def _check_stream(self, state: StreamingState) -> None:
        if not self.config.causal:
            raise ValueError("a non-causal model (causal: false) cannot stream; use forward() on whole utterances")
        if state.finished:
            raise ValueError("this stream was flushed; start a new one with init_state()")

    def _take(self, piece: Tensor, state: StreamingState) -> None:
        """Append ``piece`` [B, s] to the samples waiting for the front end."""
        if piece.dim() != 2 or piece.shape[0] != state.batch_size or not piece.is_floating_point():
            raise ValueError(f"piece must be a float tensor [{state.batch_size}, samples], got "
                             f"{tuple(piece.shape)} {piece.dtype}")
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
