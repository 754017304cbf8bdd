"""Transcripts for a character CTC model: check they exist and fit the vocabulary, derive the vocabulary.

NeMo's char dataset silently drops characters outside the vocabulary and trains on empty targets;
these checks fail first instead, naming the manifest line.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from nemo_streaming_ssl.data.manifest import ManifestError, ManifestReport


def require_transcripts(report: ManifestReport) -> None:
    """Raise ManifestError at the first usable entry whose transcript is empty."""
    for entry in report.entries:
        if not entry.text.strip():
            raise ManifestError(
                f'{report.path}:{entry.line_no}: empty "text" for {entry.audio_filepath}; ASR fine-tuning needs a '
                "transcript on every line (write it into the manifest, or a <stem>.txt beside the audio and rebuild "
                "the manifest with scripts/build_manifest.py)"
            )


def char_vocabulary(reports: Iterable[ManifestReport]) -> list[str]:
    """The sorted set of characters of all transcripts (space included): a char CTC vocabulary."""
    chars = {char for report in reports for entry in report.entries for char in entry.text}
    return sorted(chars)


def require_in_vocabulary(report: ManifestReport, vocabulary: Sequence[str]) -> None:
    """Raise ManifestError at the first transcript with a character the model cannot emit."""
    known = set(vocabulary)
    for entry in report.entries:
        unknown = sorted(set(entry.text) - known)
        if unknown:
            raise ManifestError(
                f"{report.path}:{entry.line_no}: transcript has characters {unknown} outside the vocabulary "
                f"{''.join(vocabulary)!r}; normalise the text, or add them to model.labels"
            )
