"""``wibergian reproduce``: every experiment into ``DIR/<name>/``, one ``DIR/report.md``.

Running it again into the same folder works and never makes the report worse:

- **A rerun starts afresh.** Each experiment of the run is recomputed from scratch. While it
  runs, its previous folder waits in ``DIR/.previous/<name>/``; the new result replaces it only
  when the experiment succeeds (its folder then holds ``section.json``: the markdown section,
  time, mode and finish time).
- **A failure keeps the previous result.** If the experiment fails (or is interrupted), its new
  partial output moves to ``DIR/.failed/<name>/`` and the previous folder comes back; the report
  shows the error *and* the previous result, labelled with when it was made. A run killed outright
  (``kill -9``) leaves ``DIR/.previous/<name>/``, which the next run restores first.
- **Experiments not run this time** (``--only``) but finished earlier in ``DIR`` stay in the
  report, labelled as from an earlier run.
- ``report.md`` is written to a temporary file and renamed over the old one (atomic): a reader
  or a crash never sees half a report. It is rewritten after every experiment.
- ``DIR/lock`` names the running process; a second ``reproduce`` into the same folder while the
  first runs is refused (see `wibergian.train.lock`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .progress import phase
from .report import Section, write_report

SECTION_FILE = "section.json"
PREVIOUS = ".previous"
FAILED = ".failed"


def read_section(folder: Path) -> Section | None:
    """The finished section stored in an experiment's folder, if any."""
    try:
        d = json.loads((folder / SECTION_FILE).read_text())
        return Section(d["name"], "ok", markdown=d["markdown"], seconds=float(d["seconds"]),
                       origin=f"{d['finished_utc']}, {'quick' if d['quick'] else 'full'} mode")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_section(folder: Path, sec: Section, quick: bool) -> None:
    data = {"name": sec.name, "status": "ok", "markdown": sec.markdown, "seconds": sec.seconds,
            "quick": quick,
            "finished_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    tmp = folder / f".{SECTION_FILE}.tmp"
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(folder / SECTION_FILE)


def _move(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    src.rename(dst)


def restore_interrupted(out: Path, name: str) -> None:
    """A run killed while ``name`` ran left its previous result aside: put it back."""
    prev = out / PREVIOUS / name
    if prev.exists():
        here = out / name
        if here.exists():
            _move(here, out / FAILED / name)
        prev.rename(here)


def run_experiment(out: Path, name: str, fn: Callable[..., str], quick: bool,
                   quiet: bool) -> Section:
    """Run one experiment's ``reproduce`` into a fresh ``out/name``; see the module docstring.
    ``KeyboardInterrupt`` is re-raised after the previous result is restored."""
    restore_interrupted(out, name)
    here, prev = out / name, out / PREVIOUS / name
    if here.exists():
        _move(here, prev)
    kwargs = {"quiet": quiet} if "quiet" in inspect.signature(fn).parameters else {}
    t0 = time.perf_counter()
    sec: Section
    interrupted = False
    try:
        with phase(f"reproduce: {name}{' (quick)' if quick else ''}", quiet=quiet):
            md = fn(here, quick, **kwargs)
        if not isinstance(md, str):
            raise TypeError(f"wibergian.experiments.{name}.cli.reproduce returned "
                            f"{type(md).__name__}, not str")
        sec = Section(name, "ok", markdown=md)
    except KeyboardInterrupt:
        sec, interrupted = Section(name, "failed", detail="interrupted (Ctrl-C)"), True
    except Exception as e:
        sec = Section(name, "failed", detail=_summarise_exception(e))
        print(f"[reproduce] {name}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
    sec.seconds = time.perf_counter() - t0
    if sec.status == "ok":
        here.mkdir(parents=True, exist_ok=True)
        _write_section(here, sec, quick)
        if prev.exists():
            shutil.rmtree(prev)
    else:
        if here.exists():
            _move(here, out / FAILED / name)
        if prev.exists():
            prev.rename(here)
            sec.previous = read_section(here)
    try:
        prev.parent.rmdir()  # .previous/ when empty
    except OSError:
        pass
    if interrupted:
        raise _Interrupted(sec)
    return sec


class _Interrupted(KeyboardInterrupt):
    def __init__(self, section: Section) -> None:
        super().__init__()
        self.section = section


def _summarise_exception(e: BaseException, limit: int = 12) -> str:
    import traceback

    lines = traceback.format_exception(type(e), e, e.__traceback__)
    text = "".join(lines).rstrip().splitlines()
    return "\n".join(text if len(text) <= limit else ["..."] + text[-limit:])


def cmd_reproduce(args: argparse.Namespace, experiments: tuple[str, ...],
                  load_module: Callable[[str], tuple[Any, str | None]],
                  prepare_out_dir: Callable[[Path], Path]) -> int:
    """Run the experiments one after another; never lose a section or make the report worse."""
    from .train.lock import RunLock

    out = prepare_out_dir(args.out)
    names = list(args.only or experiments)
    done: dict[str, Section] = {}

    def sections() -> list[Section]:
        secs = []
        for name in experiments:
            if name in done:
                secs.append(done[name])
            elif (earlier := read_section(out / name)) is not None:
                earlier.status = "ok (earlier run)"
                secs.append(earlier)
            elif name in names:
                secs.append(Section(name, "pending", detail="not run yet"))
        return secs

    with RunLock(out):
        for name in names:
            modname = f"wibergian.experiments.{name}.cli"
            mod, err = load_module(modname)
            fn = getattr(mod, "reproduce", None) if mod else None
            if err:
                print(f"[reproduce] {name}: FAILED to import", file=sys.stderr)
                done[name] = Section(name, "failed", detail=err)
            elif fn is None:
                why = "module not installed" if mod is None else f"{modname} has no reproduce()"
                if not args.quiet:
                    print(f"[reproduce] {name}: not available ({why})", file=sys.stderr)
                done[name] = Section(name, "not available", detail=why)
            else:
                try:
                    done[name] = run_experiment(out, name, fn, args.quick, args.quiet)
                except _Interrupted as e:
                    done[name] = e.section
                    write_report(sections(), out, args.quick)
                    raise KeyboardInterrupt from None
            write_report(sections(), out, args.quick)  # keep the report up to date
        path = write_report(sections(), out, args.quick)
    failed = [n for n, s in done.items() if s.status == "failed"]
    if not args.quiet:
        print(f"[reproduce] wrote {path}", file=sys.stderr)
    if failed:
        print(f"wibergian reproduce: {len(failed)} experiment(s) failed: {', '.join(failed)} "
              f"(details in {path})", file=sys.stderr)
        return 1
    return 0
