"""What the ``key=value`` example scripts share. NeMo-free: the scripts check their inputs before importing NeMo."""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import OmegaConf


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
