"""Can CTC align each transcript to its audio? A guard against NeMo's silent ``zero_infinity``.

CTC needs one encoder frame per token, plus a blank between two equal neighbours. After 8x
subsampling a frame is 80 ms (12.5 per second), while speech runs at about 12-20 characters per
second: a char vocabulary often cannot align, CTC's loss is infinite, and NeMo's ``CTCLoss(zero_infinity=True)``
turns it into 0, so the utterance trains nothing and lowers the reported loss. We refuse instead.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

from nemo_streaming_ssl.data.manifest import ManifestError, ManifestReport


def ctc_frames_needed(tokens: Sequence[int]) -> int:
    """Fewest frames a CTC alignment of ``tokens`` takes: one per token, one blank per repeated neighbour."""
    return len(tokens) + sum(a == b for a, b in zip(tokens, tokens[1:]))


def encoder_frames(duration_s: float, sample_rate: int, hop_s: float, subsampling_factor: int) -> int:
    """Encoder frames for ``duration_s`` of audio: NeMo's mel count floor(samples / hop), then ceil(/ factor)."""
    mel_frames = round(duration_s * sample_rate) // round(hop_s * sample_rate)
    return math.ceil(mel_frames / subsampling_factor)


def _first(problems: list[str], shown: int = 10) -> str:
    return f" (first {shown} shown)" if len(problems) > shown else ""


def require_ctc_alignable(model, reports: dict[str, list[ManifestReport]], unk_id: int | None = None) -> None:
    """Check every utterance of the model's training and validation datasets, as NeMo tokenized them.

    Raises ManifestError listing the utterances (manifest:line) that CTC cannot align or that hold
    ``unk_id`` tokens (text the tokenizer cannot spell).
    """
    lines = {
        os.path.abspath(entry.audio_filepath): f"{report.path}:{entry.line_no}"
        for dataset_reports in reports.values()
        for report in dataset_reports
        for entry in report.entries
    }
    pre = model.cfg.preprocessor
    factor = model.encoder.subsampling_factor
    frame_ms = round(1000 * pre.window_stride * factor)
    too_dense, unknown = [], []
    loaders = [model.train_dataloader(), model.val_dataloader()]
    for loader in loaders:
        for loader_one in loader if isinstance(loader, list) else [loader]:
            if loader_one is None:
                continue
            for item in loader_one.dataset.manifest_processor.collection:
                where = lines.get(os.path.abspath(item.audio_file), item.audio_file)
                needed = ctc_frames_needed(item.text_tokens)
                available = encoder_frames(item.duration, pre.sample_rate, pre.window_stride, factor)
                if needed > available:
                    too_dense.append(f"{where}: {needed} frames needed, {available} available")
                if unk_id is not None and unk_id in item.text_tokens:
                    unknown.append(f"{where}: {item.text_raw!r}")
    if unknown:
        raise ManifestError(
            f"{len(unknown)} transcripts contain text the tokenizer cannot spell (<unk>){_first(unknown)}:\n  " + "\n  ".join(unknown[:10])
            + "\nRebuild the tokenizer from transcripts that cover these characters, or normalise the text."
        )
    if too_dense:
        raise ManifestError(
            f"{len(too_dense)} transcripts have more CTC tokens than the audio has {frame_ms} ms encoder frames, so CTC "
            f"cannot align them (NeMo would silently train them with loss 0){_first(too_dense)}:\n  " + "\n  ".join(too_dense[:10])
            + "\nUse a subword vocabulary (conf/fastconformer_ctc_streaming_finetune.yaml builds one) or a larger "
            "vocab_size, or drop these utterances."
        )
