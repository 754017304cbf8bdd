"""A labeled keyword-spotting task spoken by espeak-ng, with probe-train and probe-test speakers disjoint.

A *speaker* is an espeak-ng accent (``en-us``, ``en-gb-scotland``, ...) combined with a voice variant
(``m3``, ``f2``, ``klatt4``, ...: formants, breathiness, pitch range). Train and test use disjoint variant
sets, so no test speaker is a train speaker; each clip also draws its own rate and pitch. The keywords
are not in the pretraining corpus's vocabulary (``data.corpus.WORDS``) and the clips are written to their
own folder, so no keyword audio can be in a pretraining set.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..data.corpus import NOISE_COLOURS, VOICES, WORDS, UtteranceSpec, coloured_noise, synthesize

# Minimal sets (one consonant or the vowel apart), so that a spectral average alone does not name the word.
KEYWORDS = ("bat", "cat", "hat", "mat", "pat", "rat", "sat", "fat", "bit", "kit", "hit", "pit", "bet", "pet", "bad", "bag")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3", "klatt", "klatt2")
TEST_VARIANTS = ("m6", "m7", "f4", "f5", "klatt3", "klatt4")
RATES_WPM = (100, 220)  # drawn uniformly per clip
PITCHES = (20, 80)
SNR_DB = (0.0, 20.0)  # coloured noise (data.corpus.coloured_noise) added at a uniform SNR per clip; None: clean


class KeywordTaskError(ValueError):
    """The keyword task cannot be built as asked (overlapping speakers, a keyword in the pretraining words)."""


@dataclass(frozen=True)
class Clip:
    """One labeled clip: ``label`` indexes the keyword list; ``speaker`` is accent+variant."""

    audio_filepath: str
    duration: float
    label: int
    keyword: str
    accent: str
    variant: str
    split: str

    @property
    def speaker(self) -> str:
        return f"{self.accent}+{self.variant}"


def read_clips(path: str | Path) -> list[Clip]:
    """A clip manifest (one JSON object per line) -> clips."""
    return [Clip(**json.loads(line)) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def add_noise(path: Path, snr_db: float, colour: str, rng: np.random.Generator) -> None:
    """Mix unit-RMS coloured noise into the WAV at ``path`` at ``snr_db`` below the speech RMS, in place."""
    audio, rate = sf.read(str(path), dtype="float32")
    speech_rms = float(np.sqrt(np.mean(audio**2))) + 1e-9
    noise = coloured_noise(colour, len(audio), rate, rng) * speech_rms * 10 ** (-snr_db / 20.0)
    sf.write(str(path), np.clip(audio + noise, -1.0, 1.0).astype(np.float32), rate, subtype="PCM_16")


def build_keyword_task(
    out_dir: str | Path,
    keywords: tuple[str, ...] = KEYWORDS,
    accents: tuple[str, ...] = ACCENTS,
    train_variants: tuple[str, ...] = TRAIN_VARIANTS,
    test_variants: tuple[str, ...] = TEST_VARIANTS,
    clips_per_speaker: int = 1,
    snr_db: tuple[float, float] | None = SNR_DB,
    seed: int = 0,
    sample_rate: int = 16000,
    progress: bool = True,
) -> dict[str, Path]:
    """Speak every keyword by every speaker ``clips_per_speaker`` times; write ``train.json`` and ``test.json``.

    Clips: len(keywords) * len(accents) * len(variants) * clips_per_speaker per split (16 kHz 16-bit WAV),
    each with noise of a random colour at a random SNR in ``snr_db`` (dB). Test variants must be unseen by
    the probe (train variants) and by pretraining (the voices of ``data.corpus.VOICES``).
    Returns the manifest paths {"train": ..., "test": ...}.
    """
    from tqdm import tqdm

    shared = set(train_variants) & set(test_variants)
    if shared:
        raise KeywordTaskError(f"train_variants and test_variants share {sorted(shared)}: test speakers must be unseen")
    pretrained_variants = {voice.partition("+")[2] for voice in VOICES} - {""}
    if set(test_variants) & pretrained_variants:
        raise KeywordTaskError(
            f"test_variants {sorted(set(test_variants) & pretrained_variants)} speak in the pretraining corpus (data.corpus.VOICES)"
        )
    in_corpus = set(keywords) & set(WORDS)
    if in_corpus:
        raise KeywordTaskError(f"keywords {sorted(in_corpus)} are words of the pretraining corpus (data.corpus.WORDS)")
    rng = random.Random(seed)
    noise_rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    manifests = {}
    for split, variants in (("train", train_variants), ("test", test_variants)):
        audio_dir = out_dir / split
        audio_dir.mkdir(parents=True, exist_ok=True)
        jobs = [(k, a, v, r) for k in range(len(keywords)) for a in accents for v in variants for r in range(clips_per_speaker)]
        clips = []
        for label, accent, variant, rep in tqdm(jobs, desc=f"keywords {split}", disable=not progress):
            clip_id = f"{keywords[label]}_{accent}_{variant}_{rep}"
            spec = UtteranceSpec(
                clip_id, keywords[label], f"{accent}+{variant}", rng.randint(*RATES_WPM), rng.randint(*PITCHES)
            )
            path = audio_dir / f"{clip_id}.wav"
            synthesize(spec, path, sample_rate)
            path.with_suffix(".txt").unlink()  # a label, not a transcript: keep it out of any corpus scan
            if snr_db is not None:
                add_noise(path, rng.uniform(*snr_db), rng.choice(NOISE_COLOURS), noise_rng)
            duration = sf.info(str(path)).duration
            clips.append(Clip(str(path.resolve()), round(duration, 4), label, keywords[label], accent, variant, split))
        manifests[split] = out_dir / f"{split}.json"
        manifests[split].write_text("".join(json.dumps(asdict(c)) + "\n" for c in clips), encoding="utf-8")
    return manifests
