"""s3prl upstream adapter for the streaming WavLM: a list of waveforms in, s3prl's feature dict out.

Inference (no gradients: s3prl's frozen upstream, evaluation, feature extraction) really streams: the batch
goes through ``model.feed`` in chunks of ``chunk_samples``, the utterances that end in the same chunk
end together, each limited to its own length, and the frames equal the one-shot forward's (the
model is chunk-exact). ``model.feed`` is inference-only, so when gradients are on
(``run_downstream.py -f``) the expert runs the equivalent one-shot forward instead.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from nemo_streaming_ssl.core.protocol import StreamOutput
from s3prl_upstream.wavlm import StreamingWavLM
from s3prl_upstream.wavlm.config import SAMPLE_RATE
# s3prl's SUPERB task keys; each maps to the same per-layer list (the Featurizer learns the layer weights).
TASK_KEYS = ("PR", "ASR", "QbE", "SID", "ASV", "SD", "ER", "SF", "SE", "SS")


class StreamingWavLMExpert(nn.Module):
    """s3prl upstream (``UpstreamExpert`` protocol) around a causal :class:`StreamingWavLM`.

    forward(wavs: list of [S_i] float tensors at 16 kHz) -> dict with ``hidden_states`` (one [B, T, D] tensor
    per transformer layer, T = ceil(max S_i / 320), frames past an utterance's end are zero),
    ``last_hidden_state`` and the SUPERB task keys (same list).
    """

    def __init__(self, model: StreamingWavLM, chunk_samples: int) -> None:
        super().__init__()
        if not model.config.causal:
            raise ValueError(f"{model.config.source}: the streaming upstream needs a causal model (causal: true); "
                             "this checkpoint/config is non-causal (an offline teacher)")
        if chunk_samples < 1:
            raise ValueError(f"chunk_samples must be >= 1, got {chunk_samples}")
        self.model = model
        self.chunk_samples = int(chunk_samples)

    def get_downsample_rates(self, key: str) -> int:
        return self.model.config.hop_samples

    def forward(self, wavs: list[Tensor]) -> dict[str, list[Tensor] | Tensor]:
        if not wavs or any(wav.dim() != 1 for wav in wavs):
            raise ValueError("expected a non-empty list of 1-D waveforms [samples] at 16 kHz, got "
                             f"{[tuple(wav.shape) for wav in wavs]}")
        lengths = [wav.shape[0] for wav in wavs]
        padded = pad_sequence(wavs, batch_first=True)  # [B, S], zeros on the right
        if torch.is_grad_enabled():
            hidden, _ = self.model(padded, torch.tensor(lengths, device=padded.device))
        else:
            hidden = self.stream_batch(padded, lengths)
        return {"hidden_states": hidden, "last_hidden_state": hidden[-1], **{key: hidden for key in TASK_KEYS}}

    @torch.no_grad()
    def stream_batch(self, padded: Tensor, lengths: list[int]) -> list[Tensor]:
        """padded: [B, S]; lengths: valid samples per row. Streams all rows together in chunks; the rows whose
        utterances end inside the next chunk get their last samples in one last feed that limits each row to
        its length, so padding never enters their frames and one call ends them all whatever their lengths.
        Returns per layer [B, T, D] (zeros past each row's end)."""
        cfg = self.model.config
        frames_total = -(-max(lengths) // cfg.hop_samples)
        hidden = padded.new_zeros(cfg.num_layers, padded.shape[0], frames_total, cfg.dim)

        def write(rows: list[int], outputs: list[StreamOutput]) -> None:
            for row, out in zip(rows, outputs):
                hidden[:, row, out.first_frame : out.first_frame + out.frames.shape[0]] = out.hidden_states

        rows = list(range(padded.shape[0]))  # rows still streaming together, in state order
        state = self.model.new_state(len(rows), sample_rate=SAMPLE_RATE)
        start = 0  # samples fed to every row still streaming
        while rows:
            end = start + self.chunk_samples
            ending = [i for i, row in enumerate(rows) if lengths[row] <= end]
            if ending:
                ending_rows = [rows[i] for i in ending]
                ending_lengths = [lengths[row] for row in ending_rows]
                # When every row ends here the state itself ends: no copy.
                ending_state = state if len(ending) == len(rows) else state.select(ending)
                write(ending_rows, self.model.feed(ending_state, padded[ending_rows, start: max(ending_lengths)],
                                                   last=True, valid_samples=torch.tensor(ending_lengths)))
                keep = [i for i in range(len(rows)) if i not in ending]
                if not keep:
                    break
                state, rows = state.select(keep), [rows[i] for i in keep]
            write(rows, self.model.feed(state, padded[rows, start:end]))
            start = end
        return list(hidden.unbind(0))
