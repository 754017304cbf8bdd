"""What our scripts share on the command line. NeMo-free: a script checks its inputs before importing NeMo (~15 s),
so a mistyped path fails at once with the fix."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from omegaconf import OmegaConf

EXIT_MISSING_PATH = 2
# What the files named by our scripts' path keys should be, for the error message.
PRETRAINED_NEMO = "a .nemo written by the streaming NEST pretraining"
MANIFEST = "a NeMo JSON-lines manifest, e.g. from scripts/make_corpus.py or scripts/build_manifest.py"
AUDIO = "a mono audio file"


def path_arguments(argv: Sequence[str], key: str) -> list[str]:
    """The paths that ``key=...`` overrides in ``argv`` name (Hydra's ``+``/``++`` prefixes, dotted keys ending in
    ``.key``, comma-separated and ``[a,b]`` lists); ``null`` and interpolations are not paths."""
    paths = []
    for arg in argv:
        name, sep, value = arg.lstrip("+").partition("=")
        if not sep or not (name == key or name.endswith(f".{key}")):
            continue
        for item in value.strip("[]").split(","):
            item = item.strip().strip("'\"")
            if item and item != "null" and "${" not in item:
                paths.append(item)
    return paths


def exit_on_missing_paths(argv: Sequence[str], expected: Mapping[str, str]) -> None:
    """Exit with code 2 naming every missing file: ``expected`` maps a key to what its file should be."""
    problems = [f"{key}={path}: no such file ({what})"
                for key, what in expected.items() for path in path_arguments(argv, key) if not Path(path).is_file()]
    if problems:
        print("error: " + "\n       ".join(problems), file=sys.stderr)
        raise SystemExit(EXIT_MISSING_PATH)


def parse_overrides(config_class: type, argv: list[str], usage: str):
    """``key=value`` arguments -> an instance of the dataclass ``config_class`` (OmegaConf refuses unknown keys
    and wrong types); a missing required key ends the program with ``usage``."""
    config = OmegaConf.merge(OmegaConf.structured(config_class), OmegaConf.from_dotlist(argv))
    missing = sorted(OmegaConf.missing_keys(config))
    if missing:
        raise SystemExit(f"missing {', '.join(k + '=...' for k in missing)}\n{usage}")
    return OmegaConf.to_object(config)


def run_script(main: Callable, parse: Callable, argv: list[str]) -> None:
    """``main(parse(argv))``; bad options, files or models end the program with the error, whose message says the fix."""
    try:
        main(parse(argv))
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
