"""The package installed from a wheel (not editable) runs the pose path in an empty working
directory: no file outside the installed package is needed. Also: the build shows no setuptools
deprecation warning (licence metadata), and `pose train --resume` with changed settings is
refused with a message listing them, not a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, cwd, env):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          check=False)


@pytest.mark.slow
def test_wheel_install_runs_pose_from_an_empty_folder(tmp_path):
    # a copy of what a clone holds, so the build leaves nothing in the repository
    src = tmp_path / "clone"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")

    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-v", "-w", str(tmp_path / "dist"), str(src)], tmp_path, env)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    log = build.stdout + build.stderr
    assert "deprecat" not in log.lower(), [ln for ln in log.splitlines()
                                           if "deprecat" in ln.lower()]
    assert "adding license file 'LICENSE'" in log
    (wheel,) = (tmp_path / "dist").glob("wibergian-*.whl")
    site = tmp_path / "site"
    inst = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile",
                 "--target", str(site), str(wheel)], tmp_path, env)
    assert inst.returncode == 0, inst.stderr[-3000:]

    work = tmp_path / "somewhere" / "else"
    work.mkdir(parents=True)
    assert not (work.parent / "shared").exists()
    env["PYTHONPATH"] = str(site)
    where = _run([sys.executable, "-c", "import wibergian; print(wibergian.__file__)"],
                 work, env)
    assert Path(where.stdout.strip()).is_relative_to(site)  # the installed copy, not src/

    tiny = ["--models", "2", "--basis", "4", "--grid", "8", "--batch-size", "4", "--steps", "2",
            "--out", "run"]
    cmd = [sys.executable, "-m", "wibergian.cli", "pose", "train", *tiny, "--quiet"]
    res = _run(cmd, work, env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "playground.amc (CMU mocap)" in res.stdout  # the packaged clip and cameras
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    assert metrics["trained"]["frames"] > 0 and metrics["train"]["steps"] == 2
    config = json.loads((work / "run" / "config.json").read_text())
    assert config["extra"]["models"] == 2 and config["extra"]["damping"] == 0.1

    # resuming with other experiment settings: refused, every differing key named
    res = _run(cmd + ["--resume", "--models", "3", "--damping", "0.5"], work, env)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "extra.models (2 -> 3)" in res.stderr and "extra.damping (0.1 -> 0.5)" in res.stderr
    assert "Traceback" not in res.stderr
