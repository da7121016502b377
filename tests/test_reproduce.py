"""`wibergian reproduce` run twice into one folder: both succeed, the second report is complete;
a failing rerun keeps the previous result (and the report shows it); the report is replaced
atomically; experiments not rerun keep their sections; a live writer's folder is refused."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types

import pytest

from wibergian import cli, report
from wibergian.reproduce import FAILED, PREVIOUS, SECTION_FILE
from wibergian.train.lock import LOCK_NAME

NAMES = ("ransac", "fusion", "pose", "endtoend")


def _install(monkeypatch, **fns):
    """Fake experiment modules: name -> reproduce(out_dir, quick[, quiet]) (None: missing)."""
    for name in NAMES:
        fn = fns.get(name)
        if fn is None:
            monkeypatch.setitem(sys.modules, f"wibergian.experiments.{name}.cli", None)
            continue
        fake = types.ModuleType(f"wibergian.experiments.{name}.cli")
        fake.reproduce = fn
        monkeypatch.setitem(sys.modules, f"wibergian.experiments.{name}.cli", fake)


def _tiny(tag):
    def reproduce(out_dir, quick, quiet=False):
        out_dir.mkdir(parents=True)  # a fresh folder every run (refuses an existing one)
        (out_dir / "fig.png").write_bytes(tag.encode())
        return f"## tiny {tag}\n\n![fig](fig.png)\n"
    return reproduce


def _boom(out_dir, quick):
    out_dir.mkdir(parents=True)
    (out_dir / "half.txt").write_text("partial output")
    raise RuntimeError("deliberate failure in the rerun")


def _links_resolve(path):
    text = path.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    return links and all((path.parent / ln).is_file() for ln in links)


def test_reproduce_twice_into_one_folder_with_real_ransac(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WIBERGIAN_RANSAC_QUICK_STEPS", "3")
    monkeypatch.setenv("WIBERGIAN_RANSAC_QUICK_NTEST", "50")
    monkeypatch.setitem(sys.modules, "wibergian.experiments.pose.cli",
                        types.SimpleNamespace(reproduce=_tiny("pose")))
    argv = ["reproduce", "--quick", "--only", "ransac", "pose", "--out", str(tmp_path),
            "--quiet"]
    assert cli.main(argv) == 0
    first = (tmp_path / "report.md").read_text()
    assert cli.main(argv) == 0  # the second run into the same folder works
    second = (tmp_path / "report.md").read_text()
    for text in (first, second):
        assert "| ransac | ok |" in text and "| pose | ok |" in text
        assert "## MLESAC toy" in text and "## tiny pose" in text and "Failed" not in text
    assert _links_resolve(tmp_path / "report.md")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pose", "ransac", "report.md"]
    for name in ("ransac", "pose"):
        sec = json.loads((tmp_path / name / SECTION_FILE).read_text())
        assert sec["status"] == "ok" and sec["quick"] is True
    err = capsys.readouterr().err
    # --quiet: one line per finished phase (the experiment's own phases, then the section),
    # nothing else
    assert re.findall(r"^\[reproduce: (\w+) \(quick\)\] done in", err, re.M) == \
        ["ransac", "pose"] * 2
    lines = err.strip().splitlines()
    assert all(re.fullmatch(r"\[[^\]]+\] done in \d\d:\d\d:\d\d", line) for line in lines), lines
    assert [line.split("]")[0] for line in lines].count("[ransac damped") == 2  # once per run


def test_failing_rerun_keeps_the_previous_result_and_shows_it(tmp_path, monkeypatch):
    _install(monkeypatch, ransac=_tiny("one"), pose=_tiny("first-pose"))
    assert cli.main(["reproduce", "--quick", "--out", str(tmp_path), "--quiet"]) == 0
    _install(monkeypatch, ransac=_tiny("two"), pose=_boom)
    assert cli.main(["reproduce", "--quick", "--out", str(tmp_path), "--quiet"]) == 1
    text = (tmp_path / "report.md").read_text()
    assert "## tiny two" in text and "## tiny one" not in text  # ransac: the new result
    assert "| pose | failed (previous result kept) |" in text
    assert "deliberate failure in the rerun" in text and "## tiny first-pose" in text
    assert "![fig](pose/fig.png)" in text and _links_resolve(tmp_path / "report.md")
    assert (tmp_path / "pose" / "fig.png").read_text() == "first-pose"  # folder restored
    assert (tmp_path / FAILED / "pose" / "half.txt").is_file()  # the failed output, aside
    assert not (tmp_path / PREVIOUS / "pose").exists()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_run_killed_mid_experiment_is_recovered_by_the_next(tmp_path, monkeypatch):
    _install(monkeypatch, pose=_tiny("good"))
    assert cli.main(["reproduce", "--quick", "--out", str(tmp_path), "--quiet"]) == 0
    # as left by `kill -9` during the next pose run: previous aside, a partial folder in place
    (tmp_path / PREVIOUS).mkdir()
    (tmp_path / "pose").rename(tmp_path / PREVIOUS / "pose")
    (tmp_path / "pose").mkdir()
    (tmp_path / "pose" / "partial.txt").write_text("x")
    _install(monkeypatch, pose=_boom)
    assert cli.main(["reproduce", "--quick", "--out", str(tmp_path), "--quiet"]) == 1
    assert (tmp_path / "pose" / "fig.png").read_text() == "good"
    assert "## tiny good" in (tmp_path / "report.md").read_text()


def test_experiments_not_rerun_keep_their_sections(tmp_path, monkeypatch):
    _install(monkeypatch, ransac=_tiny("r1"), pose=_tiny("p1"))
    assert cli.main(["reproduce", "--quick", "--out", str(tmp_path), "--quiet"]) == 0
    _install(monkeypatch, ransac=_tiny("r2"), pose=_tiny("p2"))
    assert cli.main(["reproduce", "--quick", "--only", "pose", "--out", str(tmp_path),
                     "--quiet"]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "| ransac | ok (earlier run) |" in text and "## tiny r1" in text
    assert "result of an earlier run" in text and "quick mode" in text
    assert "| pose | ok |" in text and "## tiny p2" in text and "p1" not in text


def test_report_is_replaced_atomically(tmp_path, monkeypatch):
    good = report.write_report([report.Section("x", "ok", markdown="## good")], tmp_path, True)
    before = good.read_text()

    def broken(*a, **k):
        raise OSError("disk full while rendering")

    monkeypatch.setattr(report, "render", broken)
    with pytest.raises(OSError):
        report.write_report([report.Section("x", "failed", detail="bad")], tmp_path, True)
    assert good.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]  # no temporary left


def test_a_live_reproduce_in_the_folder_refuses_a_second(tmp_path, monkeypatch, capsys):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from wibergian.train.lock import process_start

        (tmp_path / LOCK_NAME).write_text(json.dumps({
            "host": __import__("platform").node(), "pids": [proc.pid],
            "starts": [process_start(proc.pid)], "argv": ["wibergian", "reproduce"]}))
        _install(monkeypatch, pose=_tiny("p"))
        assert cli.main(["reproduce", "--quick", "--out", str(tmp_path), "--quiet"]) == 2
        assert f"in use by process(es) {proc.pid}" in capsys.readouterr().err
        assert not (tmp_path / "pose").exists()
    finally:
        proc.kill()
        proc.wait()


def test_ctrl_c_during_a_rerun_keeps_the_previous_result(tmp_path, monkeypatch):
    _install(monkeypatch, pose=_tiny("kept"))
    assert cli.main(["reproduce", "--quick", "--out", str(tmp_path), "--quiet"]) == 0

    def interrupted(out_dir, quick):
        out_dir.mkdir(parents=True)
        raise KeyboardInterrupt

    _install(monkeypatch, pose=interrupted)
    assert cli.main(["reproduce", "--quick", "--out", str(tmp_path), "--quiet"]) == 130
    text = (tmp_path / "report.md").read_text()
    assert "interrupted (Ctrl-C)" in text and "## tiny kept" in text
    assert (tmp_path / "pose" / "fig.png").read_text() == "kept"
    assert not (tmp_path / LOCK_NAME).exists()
