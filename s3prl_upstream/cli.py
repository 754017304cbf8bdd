"""``streaming-ssl-s3prl``: install/remove/check the s3prl import hook, and run s3prl's run_downstream.py.

    streaming-ssl-s3prl install-hook [--site-dir DIR]   # editable installs: pip does not ship the .pth then
    streaming-ssl-s3prl remove-hook  [--site-dir DIR]
    streaming-ssl-s3prl status       [--site-dir DIR]
    streaming-ssl-s3prl run-downstream [--script PATH] -- -m train -u streaming_wavlm_400ms -k ckpt.pt -d asr -n exp
    streaming-ssl-s3prl example-task DIR [--steps N]   # DIR/downstream/example/config.yaml: a smoke task, no data
"""

from __future__ import annotations

import argparse
import runpy
import sys
import sysconfig
from pathlib import Path

PTH_NAME = "streaming_ssl_s3prl.pth"
PTH_SOURCE = Path(__file__).with_name(PTH_NAME)


def default_site_dir() -> Path:
    """site-packages of the running interpreter (the virtual environment's when one is active)."""
    return Path(sysconfig.get_paths()["purelib"])


def install_hook(site_dir: Path) -> Path:
    """Writes the .pth file into ``site_dir``; returns its path. Re-running replaces it."""
    if not site_dir.is_dir():
        raise SystemExit(f"error: site directory {site_dir} does not exist; pass --site-dir <site-packages>")
    target = site_dir / PTH_NAME
    target.write_text(PTH_SOURCE.read_text())
    return target


def remove_hook(site_dir: Path) -> Path | None:
    """Deletes the .pth file from ``site_dir``; returns its path, or None when there was none."""
    target = site_dir / PTH_NAME
    if not target.exists():
        return None
    target.unlink()
    return target


def status(site_dir: Path) -> int:
    """Prints where the hook stands and whether ``import s3prl.hub`` now shows our entries; 0 when all is well."""
    from s3prl_upstream import s3prl_hook

    target = site_dir / PTH_NAME
    ok = True
    if not target.exists():
        print(f"hook file: missing ({target}); run `streaming-ssl-s3prl install-hook`")
        ok = False
    elif target.read_text() != PTH_SOURCE.read_text():
        print(f"hook file: {target} differs from this version; run `streaming-ssl-s3prl install-hook`")
        ok = False
    else:
        print(f"hook file: {target}")
    print(f"hook active in this interpreter: {'yes' if s3prl_hook.is_installed() else 'no'}")

    import s3prl.hub  # registers through the hook when it is active

    from s3prl_upstream import hubconf

    present = [name for name in hubconf.ENTRIES if getattr(s3prl.hub, name, None) is hubconf.ENTRIES[name]]
    print(f"s3prl {getattr(sys.modules['s3prl'], '__version__', '?')} at {Path(s3prl.hub.__file__).parent}")
    print(f"entries in s3prl.hub: {', '.join(present) or 'none'}")
    if len(present) < len(hubconf.ENTRIES):
        print("missing entries: plain `python run_downstream.py` will not find them; install the hook or use "
              "`streaming-ssl-s3prl run-downstream`")
        ok = False
    return 0 if ok else 1


def _check_downstream_args(s3prl_args: list[str]) -> None:
    """Stops early, with the fix, on the two mistakes every first run makes: no config.yaml, no CUDA."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("-d", "--downstream")
    parser.add_argument("-c", "--config")
    parser.add_argument("-e", "--past_exp")
    parser.add_argument("--device")
    known, _ = parser.parse_known_args(s3prl_args)
    if known.downstream and not known.config and not known.past_exp:
        config = Path("downstream") / known.downstream / "config.yaml"
        if not config.is_file():
            raise SystemExit(
                f"error: {config.resolve()} does not exist. run_downstream.py reads ./downstream/<task>/config.yaml: "
                "run from the s3prl/s3prl folder of an s3prl git clone (the pip package has no config files), "
                "or pass -c /path/to/config.yaml"
            )
    if known.device is None:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("error: run_downstream.py defaults to --device cuda and there is no CUDA device here: "
                             "add --device cpu")


def run_downstream(s3prl_args: list[str], script: str | None = None) -> None:
    """Registers our entries in s3prl.hub, then runs s3prl's run_downstream.py with ``s3prl_args``.

    ``script``: a run_downstream.py of your own s3prl clone; default: the installed ``s3prl.run_downstream``.
    """
    _check_downstream_args(s3prl_args)
    from s3prl_upstream.registration import register

    register()
    if script is not None:
        sys.argv = [script, *s3prl_args]
        runpy.run_path(script, run_name="__main__")
    else:
        import s3prl.run_downstream

        sys.argv = [s3prl.run_downstream.__file__, *s3prl_args]
        s3prl.run_downstream.main()


def _split_run_downstream(argv: list[str]) -> tuple[str | None, list[str]]:
    """``[--script PATH] [--] s3prl args...`` -> (script, s3prl args). s3prl's own flags pass through untouched."""
    script = None
    if argv[:1] == ["--script"]:
        if len(argv) < 2:
            raise SystemExit("error: --script needs the path of a run_downstream.py")
        script, argv = argv[1], argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    return script, argv


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run-downstream"]:
        script, s3prl_args = _split_run_downstream(argv[1:])
        run_downstream(s3prl_args, script)
        return 0

    parser = argparse.ArgumentParser(prog="streaming-ssl-s3prl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("install-hook", "write streaming_ssl_s3prl.pth into site-packages (needed after `pip install -e`)"),
        ("remove-hook", "delete that .pth file"),
        ("status", "show whether the hook is installed and s3prl.hub lists the streaming_wavlm and streaming_nest entries"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--site-dir", type=Path, default=default_site_dir(),
                             help="site-packages to use (default: this interpreter's, %(default)s)")
    example = commands.add_parser("example-task", help="write DIR/downstream/example/config.yaml: s3prl's example "
                                  "task (random audio and labels) as a smoke run; then run-downstream from DIR")
    example.add_argument("folder", type=Path)
    example.add_argument("--steps", type=int, default=4, help="training steps; states-<steps>.ckpt is saved at the end")
    commands.add_parser("run-downstream", help="register the entries, then run s3prl's run_downstream.py: "
                        "run-downstream [--script PATH] -- <run_downstream.py arguments>")
    args = parser.parse_args(argv)
    if args.command == "install-hook":
        print(f"installed {install_hook(args.site_dir)}")
    elif args.command == "example-task":
        from s3prl_upstream.example_task import write_example_task

        print(f"wrote {write_example_task(args.folder, args.steps)}; from {args.folder}: streaming-ssl-s3prl "
              f"run-downstream -- -m train -u <entry> -k <checkpoint> -d example -n <name> --device cpu")
    elif args.command == "remove-hook":
        removed = remove_hook(args.site_dir)
        print(f"removed {removed}" if removed else f"no {PTH_NAME} in {args.site_dir}")
    else:
        return status(args.site_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
