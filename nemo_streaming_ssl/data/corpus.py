"""A small local speech corpus, made without downloads: espeak-ng speech plus synthetic noise.

Everything is a function of the seed: texts, voices, speaking rates, pitches and noise. espeak-ng
speaks at 22.05 kHz; we resample to the target rate with a polyphase filter and write 16-bit WAV
with soundfile, each utterance beside a ``.txt`` transcript (lower-case words, usable by a char CTC).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from .manifest import ManifestEntry, build_manifests, write_manifest

VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb+m3", "en-us+f2", "en-gb-scotland", "en-029", "en-us+m4")
RATES_WPM = (120, 140, 160, 180, 200)
PITCHES = (25, 40, 50, 60, 75)
NOISE_COLOURS = ("white", "pink", "brown", "hum")

WORDS = (
    "the a one two three four five six seven eight nine ten red green blue black white small large "
    "old new quick slow bright dark warm cold open closed early late river mountain city village garden "
    "window table chair kitchen market station bridge harbour forest island morning evening winter summer "
    "music story letter paper water bread coffee number signal voice sound engine model stream window "
    "teacher student doctor farmer driver painter singer sailor walks runs reads writes sings builds opens "
    "closes carries finds keeps leaves brings takes makes sees hears speaks listens waits turns learns "
    "quietly loudly slowly quickly always never often today tomorrow yesterday here there under over "
    "between behind before after with without near far across through into onto from about"
).split()


class CorpusError(RuntimeError):
    """The corpus cannot be made here (for example espeak-ng is missing)."""


@dataclass(frozen=True)
class UtteranceSpec:
    utt_id: str
    text: str
    voice: str
    rate_wpm: int
    pitch: int


def utterance_specs(num_utterances: int, seed: int, min_words: int = 4, max_words: int = 12) -> list[UtteranceSpec]:
    """The texts and voice settings of a corpus; the same seed gives the same list."""
    rng = random.Random(seed)
    specs = []
    for i in range(num_utterances):
        words = [rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))]
        specs.append(
            UtteranceSpec(f"utt{i:05d}", " ".join(words), rng.choice(VOICES), rng.choice(RATES_WPM), rng.choice(PITCHES))
        )
    return specs


def espeak_binary() -> str:
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise CorpusError("espeak-ng not found; install it (Debian/Ubuntu: `apt-get install espeak-ng`) or run `make sysdeps`")
    return binary


def resample(audio: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    ratio = Fraction(to_hz, from_hz)
    return audio if ratio == 1 else resample_poly(audio, ratio.numerator, ratio.denominator)


def synthesize(spec: UtteranceSpec, path: Path, sample_rate: int) -> float:
    """Speak one utterance into ``path`` (mono 16-bit WAV); return its duration in seconds."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as raw:
        cmd = [espeak_binary(), "-v", spec.voice, "-s", str(spec.rate_wpm), "-p", str(spec.pitch), "-w", raw.name, spec.text]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise CorpusError(f"espeak-ng failed for {spec.utt_id}: {result.stderr.strip()}")
        audio, espeak_hz = sf.read(raw.name, dtype="float32")
    audio = resample(audio, espeak_hz, sample_rate).astype(np.float32)
    sf.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")
    path.with_suffix(".txt").write_text(spec.text + "\n", encoding="utf-8")
    return len(audio) / sample_rate


def coloured_noise(colour: str, num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise: white, pink (1/f), brown (1/f^2) or mains hum (50 Hz harmonics over faint white)."""
    if colour == "hum":
        t = np.arange(num_samples) / sample_rate
        noise = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 6))
        noise = noise + 0.05 * rng.standard_normal(num_samples)
    else:
        spectrum = np.fft.rfft(rng.standard_normal(num_samples))
        freqs = np.fft.rfftfreq(num_samples, 1.0 / sample_rate)
        exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}[colour]
        spectrum[1:] /= freqs[1:] ** exponent
        spectrum[0] = 0.0
        noise = np.fft.irfft(spectrum, n=num_samples)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def make_noise(out_dir: Path, num_files: int, seed: int, sample_rate: int, min_s: float = 2.0, max_s: float = 6.0) -> list[ManifestEntry]:
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(num_files):
        colour = NOISE_COLOURS[i % len(NOISE_COLOURS)]
        num_samples = int(rng.uniform(min_s, max_s) * sample_rate)
        level = 10 ** (rng.uniform(-30.0, -15.0) / 20.0)  # RMS between -30 and -15 dBFS
        audio = (level * coloured_noise(colour, num_samples, sample_rate, rng)).astype(np.float32)
        path = out_dir / f"noise{i:04d}_{colour}.wav"
        sf.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")
        entries.append(ManifestEntry(str(path.resolve()), round(num_samples / sample_rate, 4)))
    return entries


def make_corpus(
    out_dir: str | Path,
    num_utterances: int = 200,
    num_noise: int = 16,
    seed: int = 0,
    sample_rate: int = 16000,
    val_fraction: float = 0.1,
    progress: bool = True,
) -> dict[str, Path]:
    """Write ``speech/``, ``noise/`` and the manifests ``train.json``, ``val.json``, ``noise.json`` under ``out_dir``."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    speech_dir = out_dir / "speech"
    speech_dir.mkdir(parents=True, exist_ok=True)
    for spec in tqdm(utterance_specs(num_utterances, seed), desc="espeak-ng", disable=not progress):
        synthesize(spec, speech_dir / f"{spec.utt_id}.wav", sample_rate)
    manifests = build_manifests(speech_dir, out_dir, sample_rate, val_fraction, seed)
    manifests["noise"] = write_manifest(make_noise(out_dir / "noise", num_noise, seed, sample_rate), out_dir / "noise.json")
    return manifests
