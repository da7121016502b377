"""One set of writers per run folder (the lock file), workers that stop when their launcher dies,
and resume refusing changed settings (the experiment's own included)."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch import nn

from wibergian.train import TrainConfig, Trainer
from wibergian.train.lock import LOCK_NAME, RunLock, RunLockedError, pid_alive, process_start


def _loss(m, batch):
    x, y = batch
    return ((m(x) - y) ** 2).mean(), {}


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 2, generator=g, dtype=torch.float64)
    return x, x @ torch.tensor([[1.0], [-2.0]], dtype=torch.float64)


def _fit(run_dir, resume=False, model=None, **kw):
    torch.manual_seed(0)
    model = model or nn.Linear(2, 1).double()
    base = dict(steps=4, batch_size=8, lr=0.05, checkpoint_every=2, quiet=True, plot=False)
    base.update(kw)
    return Trainer(model, _loss, _data(), TrainConfig(**base), run_dir=run_dir,
                   resume=resume).fit()


def _write_lock(folder, pids, starts=None, host=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps({
        "host": host or platform.node(), "pids": pids,
        "starts": starts if starts is not None else [process_start(p) for p in pids],
        "argv": ["other", "run"], "started_utc": "2026-01-01T00:00:00+00:00"}))


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_live_writer_refuses_a_second_run_and_its_files_are_untouched(tmp_path, live_pid):
    run = tmp_path / "run"
    _write_lock(run, [live_pid])
    before = (run / LOCK_NAME).read_text()
    with pytest.raises(RunLockedError, match=rf"in use by process\(es\) {live_pid}.*other run"):
        _fit(run)
    with pytest.raises(RunLockedError):
        _fit(run, resume=True)
    assert (run / LOCK_NAME).read_text() == before  # the owner's lock is left alone
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing else was written


def test_stale_lock_of_a_dead_process_is_taken_over_and_released(tmp_path, dead_pid):
    assert not pid_alive(dead_pid)
    run = tmp_path / "run"
    _fit(run)  # a first run: its lock is removed at the end
    assert not (run / LOCK_NAME).exists()
    _write_lock(run, [dead_pid])  # as left by a run killed with SIGKILL
    res = _fit(run, resume=True, steps=6)
    assert res.steps_done == 6 and not (run / LOCK_NAME).exists()


def test_reused_pid_with_another_start_time_is_stale(tmp_path, live_pid):
    start = process_start(live_pid)
    if start is None:
        pytest.skip("no /proc on this system")
    assert pid_alive(live_pid) and not pid_alive(live_pid, start + 1)
    _write_lock(tmp_path, [live_pid], starts=[start + 1])
    with RunLock(tmp_path) as lock:
        assert lock.took_over == [live_pid]
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pids"] == [os.getpid()]
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_of_another_host_is_refused_with_what_to_do(tmp_path):
    _write_lock(tmp_path, [12345], starts=[None], host="elsewhere.example")
    with pytest.raises(RunLockedError, match=r"elsewhere\.example.*delete .*lock"):
        RunLock(tmp_path).acquire()


def test_lock_is_released_when_the_run_fails(tmp_path):
    run = tmp_path / "run"
    _fit(run)
    with pytest.raises(ValueError):
        _fit(run, resume=True, lr=0.1)
    assert not (run / LOCK_NAME).exists()


def test_resume_refuses_changed_experiment_settings_listing_every_key(tmp_path):
    run = tmp_path / "run"
    _fit(run, extra={"damping": 0.1, "models": 6, "label": "x"})
    saved = json.loads((run / "config.json").read_text())
    assert saved["extra"] == {"damping": 0.1, "models": 6, "label": "x"}
    with pytest.raises(ValueError) as err:
        _fit(run, resume=True, lr=0.2, extra={"damping": 0.5, "models": 3, "label": "x"})
    msg = str(err.value)
    assert "lr (0.05 -> 0.2)" in msg and "extra.damping (0.1 -> 0.5)" in msg
    assert "extra.models (6 -> 3)" in msg and "label" not in msg
    # unchanged settings resume (and a larger `steps` extends the run)
    assert _fit(run, resume=True, steps=6,
                extra={"damping": 0.1, "models": 6, "label": "x"}).steps_done == 6


def test_resume_with_a_differently_shaped_model_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    _fit(run)
    with pytest.raises(ValueError, match="does not match this one"):
        _fit(run, resume=True, steps=6, model=nn.Sequential(nn.Linear(2, 1)).double())


def test_cosine_schedule_makes_steps_a_trajectory_setting(tmp_path):
    run = tmp_path / "run"
    _fit(run, lr_schedule="cosine")
    with pytest.raises(ValueError, match=r"steps \(4 -> 6\)"):
        _fit(run, resume=True, steps=6, lr_schedule="cosine")


def test_momentum_is_refused_for_optimizers_that_ignore_it():
    with pytest.raises(ValueError, match="momentum.*optimizer 'adam' would ignore it"):
        TrainConfig(optimizer="adam", momentum=0.9)
    assert TrainConfig(optimizer="sgd", momentum=0.9).momentum == 0.9


_ORPHAN = textwrap.dedent("""
    import os, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
    print(child.pid, flush=True)
    child.wait()
""")
_WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from wibergian.train.orphan import watch_parent
    from wibergian.train.signals import GracefulStop
    marker = Path(sys.argv[1])
    with GracefulStop() as stop:
        watch_parent(poll=0.05, grace=30.0)
        marker.write_text("running")
        while not stop.requested:
            time.sleep(0.02)
    marker.write_text("stopped by " + stop.signal_name)
""")


def test_worker_stops_cleanly_when_its_launcher_is_killed(tmp_path):
    marker = tmp_path / "marker"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen([sys.executable, "-c", _ORPHAN, _WORKER, str(marker)],
                                stdout=subprocess.PIPE, text=True, env=env)
    try:
        worker = int(launcher.stdout.readline())
        deadline = time.monotonic() + 60
        while not (marker.exists() and marker.read_text() == "running"):
            assert time.monotonic() < deadline, "worker did not start"
            time.sleep(0.05)
        os.kill(launcher.pid, signal.SIGKILL)  # like `kill -9` of torchrun
        launcher.wait()
        deadline = time.monotonic() + 20
        while pid_alive(worker):
            assert time.monotonic() < deadline, "worker kept running after its launcher died"
            time.sleep(0.05)
        assert marker.read_text() == "stopped by SIGTERM"  # the graceful path: checkpoint, stop
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


def test_lock_works_without_hard_links(tmp_path, monkeypatch, live_pid):
    def no_link(*a, **k):
        raise PermissionError("hard links not supported here")

    monkeypatch.setattr(os, "link", no_link)
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pids"] == [os.getpid()]
        with pytest.raises(RunLockedError):
            RunLock(tmp_path, pids=[live_pid]).acquire()  # another writer: refused
    assert not (tmp_path / LOCK_NAME).exists()
