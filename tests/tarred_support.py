"""NeMo tarred audio and Lhotse Shar for the tests: the corpus' training set in 2 archives, copies of it and damaged
archives."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import soundfile as sf

from nemo_streaming_ssl.data.tarred import TARRED_MANIFEST, make_lhotse_shar, make_tarred_dataset


@pytest.fixture(scope="module")
def exact_corpus(speech_corpus, tmp_path_factory):
    """The corpus with durations of exactly the files' samples: NeMo's manifest loader reads int(duration * rate)
    samples, Lhotse round(duration * rate), so 4-decimal durations would differ by a sample at the end."""
    folder = tmp_path_factory.mktemp("exact")
    lines = []
    for line in Path(speech_corpus["train"]).read_text().splitlines():
        item = json.loads(line)
        frames = sf.info(item["audio_filepath"]).frames
        item["duration"] = frames / 16000
        assert int(item["duration"] * 16000) == frames
        lines.append(json.dumps(item))
    (folder / "train.json").write_text("\n".join(lines) + "\n")
    return dict(speech_corpus, train=folder / "train.json")


@pytest.fixture(scope="module")
def tarred(speech_corpus, tmp_path_factory):
    """The corpus' 22 training utterances in 2 archives of 11; import it into a test module to use it."""
    return make_tarred_dataset([speech_corpus["train"]], tmp_path_factory.mktemp("tarred"), num_shards=2)


@pytest.fixture(scope="module")
def shar(exact_corpus, tmp_path_factory):
    """The exact corpus' 22 training utterances as Lhotse Shar in 2 shards (cuts.N.jsonl.gz + recording.N.tar)."""
    folder = tmp_path_factory.mktemp("shar")
    make_lhotse_shar([exact_corpus["train"]], folder, num_shards=2)
    return folder


def archive_members(path) -> dict[str, bytes]:
    with tarfile.open(path) as archive:
        return {member.name: archive.extractfile(member).read() for member in archive}


def rewrite_archive(path: Path, drop: str | None = None, corrupt: str | None = None) -> None:
    """Write ``path`` again without member ``drop`` and with member ``corrupt``'s bytes replaced by non-audio."""
    members = archive_members(path)
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            if name == drop:
                continue
            data = b"not audio, " * 100 if name == corrupt else data
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, fileobj=io.BytesIO(data))


def copy_tarred(tarred, folder: Path):
    """A copy of the tarred set in ``folder``, with its manifest and brace pattern."""
    folder.mkdir()
    for shard in range(tarred.num_shards):
        (folder / f"audio_{shard}.tar").write_bytes((tarred.manifest.parent / f"audio_{shard}.tar").read_bytes())
    (folder / TARRED_MANIFEST).write_text(tarred.manifest.read_text())
    return folder / TARRED_MANIFEST, str(folder / f"audio_{{0..{tarred.num_shards - 1}}}.tar")
