"""NeMo tarred audio for the tests: the corpus' training set in 2 archives, copies of it and damaged archives."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from nemo_streaming_ssl.data.tarred import TARRED_MANIFEST, make_tarred_dataset


@pytest.fixture(scope="module")
def tarred(speech_corpus, tmp_path_factory):
    """The corpus' 22 training utterances in 2 archives of 11; import it into a test module to use it."""
    return make_tarred_dataset([speech_corpus["train"]], tmp_path_factory.mktemp("tarred"), num_shards=2)


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
