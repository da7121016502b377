"""Assembling ``report.md`` from the experiments' markdown sections.

Each experiment's ``reproduce(out_dir, quick)`` writes its figures into its own sub-folder
``DIR/<name>/`` and returns markdown whose image/file links are relative to that folder; they
are rewritten here to be relative to ``DIR`` (a link that already resolves from ``DIR`` is left).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

import torch

_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


@dataclass
class Section:
    """One experiment's outcome: ``status`` is "ok", "ok (earlier run)" (kept from an earlier
    run into the same folder, ``origin`` says when), "not available", "pending" or "failed"
    (``previous``: the earlier result that a failed rerun kept, if any)."""

    name: str
    status: str
    markdown: str = ""
    detail: str = ""
    seconds: float = 0.0
    origin: str = ""
    previous: Section | None = None


def machine_line() -> str:
    """Cores, CPU, Python and torch versions of this machine."""
    cpu = platform.processor() or platform.machine()
    return (f"{os.cpu_count()} CPU cores ({cpu}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}, "
            f"torch threads {torch.get_num_threads()}")


def rebase_links(markdown: str, sub: str, report_dir: Path) -> str:
    """Prefix relative links of a section written in ``report_dir/sub`` with ``sub/``."""

    def fix(m: re.Match[str]) -> str:
        target = m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith(("/", "#")):
            return m.group(0)
        if (report_dir / sub / target).exists() or not (report_dir / target).exists():
            return f"{m.group(1)}{sub}/{target}{m.group(3)}"
        return m.group(0)

    return _LINK.sub(fix, markdown)


def render(sections: list[Section], report_dir: Path, quick: bool,
           now: dt.datetime | None = None) -> str:
    """The whole report: title, date, machine, summary table, one section per experiment."""
    now = now or dt.datetime.now(dt.UTC)
    lines = [
        "# wibergian — reproduction report",
        "",
        f"- Date: {now.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {machine_line()}",
        f"- Mode: {'quick (short runs; numbers indicative only)' if quick else 'full'}",
        "- Every data set below is labelled; *generated* means produced by this program's "
        "own generators, not recorded data.",
        "",
        "| experiment | status | time (s) |",
        "|---|---|---|",
    ]
    for s in sections:
        status = s.status
        if s.status == "failed" and s.previous is not None:
            status = "failed (previous result kept)"
        lines.append(f"| {s.name} | {status} | {s.seconds:.1f} |")
    lines.append("")
    for s in sections:
        if s.status.startswith("ok"):
            if s.origin and s.status != "ok":
                lines += [f"*{s.name}: result of an earlier run into this folder ({s.origin}); "
                          "not rerun this time.*", ""]
            lines += [rebase_links(s.markdown.strip(), s.name, report_dir), ""]
        elif s.status in ("not available", "pending"):
            lines += [f"## {s.name}", "", f"{s.status.capitalize()}: {s.detail}", ""]
        else:
            lines += [f"## {s.name}", "", "**Failed.** The experiment raised:", "", "```",
                      s.detail.strip(), "```", ""]
            if s.previous is not None:
                lines += [f"The previous result, kept in `{s.name}/` ({s.previous.origin}):",
                          "", rebase_links(s.previous.markdown.strip(), s.name, report_dir), ""]
    return "\n".join(lines)


def write_report(sections: list[Section], report_dir: Path, quick: bool) -> Path:
    """Write ``report_dir/report.md`` atomically (a temporary file renamed over it, so a crash
    or a reader never sees half a report); returns its path."""
    path = report_dir / "report.md"
    tmp = report_dir / f".report.md.tmp-{os.getpid()}"
    try:
        tmp.write_text(render(sections, report_dir, quick))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
