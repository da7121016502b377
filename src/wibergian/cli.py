"""The ``wibergian`` command line (argument parsing and dispatch only).

    wibergian ransac [--seeds N --steps S --out DIR]   MLESAC toy (paper Fig. 2)
    wibergian reproduce [--quick] [--out DIR]          every experiment -> DIR/report.md
    wibergian fuse ... / pose ... / bench ...          when those packages are installed

Experiment packages plug in through ``wibergian.experiments.<name>.cli`` (``register`` and
``reproduce``) and ``wibergian.bench.cli`` (``register``); they are imported lazily and a
missing one is skipped.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

EXPERIMENTS = ("ransac", "fusion", "pose", "endtoend", "damping")
EXTRA_COMMANDS = ("wibergian.bench.cli",)
#: Set to 1 to get full Python tracebacks instead of one-line errors.
DEBUG_ENV = "WIBERGIAN_DEBUG"


class UsageError(Exception):
    """A problem with the user's input; printed as ``wibergian: error: ...`` with exit 2."""


def prepare_out_dir(path: Path) -> Path:
    """Create the output folder, or raise `UsageError` saying what to fix."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is an existing file; give a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create --out folder {path}: {e.strerror or e}; choose a "
                         "writable location") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"--out folder {path} is not writable; choose another location")
    return path


def load_module(name: str) -> tuple[ModuleType | None, str | None]:
    """Import ``name``: ``(module, None)``, ``(None, None)`` if it does not exist, or
    ``(None, error summary)`` if it exists but fails to import."""
    try:
        return importlib.import_module(name), None
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            return None, None
        return None, f"import of {name} failed: {type(e).__name__}: {e}"
    except Exception as e:  # a plug-in's own bug must not break the other commands
        return None, f"import of {name} failed: {type(e).__name__}: {e}"


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every sub-command that is importable now."""
    parser = argparse.ArgumentParser(
        prog="wibergian",
        description=(
            "Differentiable argmin layers with trust-region damped implicit gradients "
            "(Toso, Campbell & Russell, NeurIPS 2019): experiments and reports. "
            "Run `wibergian COMMAND --help` for the options of one command."),
    )
    from wibergian import __version__

    parser.add_argument("--version", action="version", version=f"wibergian {__version__}")
    parser.add_argument(
        "--threads", type=int, default=int(os.environ.get("WIBERGIAN_THREADS", "1")),
        help="PyTorch intra-op threads (default 1, or $WIBERGIAN_THREADS: the workloads are many "
             "small batched ops, which extra threads slow down on a busy machine; see "
             "docs/method.md)")
    parser.add_argument(
        "--compile", choices=("off", "auto"), default="off",
        help="argmin's automatic compilation in the experiments (default off: the figures in "
             "the docs were made eagerly and repeat to the last digit; auto: the library's "
             "default, each energy compiled after 20 calls of one shape: faster on long runs, "
             "results equal to rounding). `bench` sets it per row and ignores this")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    for modname in [f"wibergian.experiments.{n}.cli" for n in EXPERIMENTS] + list(EXTRA_COMMANDS):
        mod, err = load_module(modname)
        if err:
            print(f"wibergian: warning: {err} (its command is unavailable)", file=sys.stderr)
        register = getattr(mod, "register", None) if mod else None
        if register is None:
            continue
        try:
            register(sub)
        except Exception as e:
            print(f"wibergian: warning: {modname}.register failed ({type(e).__name__}: {e}); "
                  "its command is unavailable", file=sys.stderr)
    rep = sub.add_parser(
        "reproduce",
        help="run every available experiment on built-in data and write DIR/report.md",
        description=(
            "Run each experiment present in this installation (ransac, fusion, pose, endtoend) "
            "on its "
            "built-in (generated or packaged) data, each into DIR/<name>/, and assemble "
            "DIR/report.md with the tables and figures. An experiment that is not installed is "
            "listed as not available; one that fails is summarised in the report and the "
            "command exits with status 1 after running the others. Running it again into the "
            "same DIR starts afresh; an experiment's previous result is replaced only when "
            "its rerun succeeds (a failed rerun keeps it and the report shows both), and "
            "experiments not rerun (--only) keep their earlier sections. Progress: one bar or "
            "line per phase with the time left; --quiet prints one line per finished phase. "
            "Times on 2 cores: see README.md."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    rep.add_argument("--quick", action="store_true",
                     help="short runs (minutes in total); numbers are indicative only")
    rep.add_argument("--out", type=Path, default=Path("report"), help="output folder")
    rep.add_argument("--only", nargs="+", choices=EXPERIMENTS, metavar="NAME",
                     help=f"run only these experiments (from {', '.join(EXPERIMENTS)})")
    rep.add_argument("--quiet", action="store_true",
                     help="one line per finished phase (name, time) instead of progress bars")
    rep.set_defaults(func=cmd_reproduce)
    return parser


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run the experiments one after another (see `wibergian.reproduce`)."""
    from wibergian import reproduce

    return reproduce.cmd_reproduce(args, EXPERIMENTS, load_module, prepare_out_dir)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wibergian`` script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    if args.threads < 1:
        print("wibergian: error: --threads must be >= 1", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    from wibergian.auto_compile import AFTER_CALLS, auto_compile_after

    after = 0 if args.compile == "off" and args.command != "bench" else AFTER_CALLS
    try:
        with auto_compile_after(after):
            rc = args.func(args)
    except UsageError as e:
        print(f"wibergian {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wibergian: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"wibergian {args.command}: error: {e} (set {DEBUG_ENV}=1 for the traceback)",
              file=sys.stderr)
        return 2
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
