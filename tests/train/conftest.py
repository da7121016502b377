"""Helpers for the trainer tests: the tiny training script, run in-process or as a subprocess."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

SCRIPT = Path(__file__).with_name("train_script.py")
_DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
              "MASTER_PORT", "GROUP_RANK", "TORCHELASTIC_RUN_ID")


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location("wibergian_train_test_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod



def run_script(
    args: list[str], fault: str | None = None, nproc: int = 0
) -> subprocess.CompletedProcess[str]:
    """Run train_script.py (under torchrun with ``nproc`` > 0 processes) with --quiet."""
    env = {k: v for k, v in os.environ.items() if k not in _DIST_VARS}
    env.pop("WIBERGIAN_TRAIN_FAULT", None)
    env["OMP_NUM_THREADS"] = "1"
    if fault:
        env["WIBERGIAN_TRAIN_FAULT"] = fault
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", str(SCRIPT)]
    else:
        cmd = [sys.executable, str(SCRIPT)]
    return subprocess.run(cmd + args + ["--quiet"], env=env, capture_output=True, text=True,
                          timeout=180, check=False)


def read_metrics(run_dir: Path, drop_wall: bool = True) -> list[dict[str, Any]]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    if drop_wall:
        for r in recs:
            r.pop("wall", None)
    return recs


def load_params(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """``kit.script`` (train_script as a module: Net, fixed_data, online, target),
    ``kit.run_script``, ``kit.read_metrics``, ``kit.load_params``."""
    return SimpleNamespace(script=_load_script(), run_script=run_script,
                           read_metrics=read_metrics, load_params=load_params)
