"""Exact resume after SIGKILL: part-way through training, and in the middle of a checkpoint
write (torn temporary file; complete temporary file not yet renamed)."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from wibergian.train import CheckpointError, list_checkpoints, load_checkpoint

BASE = ["--steps", "30", "--batch-size", "16", "--checkpoint-every", "10", "--noise"]


@pytest.mark.parametrize(
    "data, fault, kept",
    [
        ("tensors", "kill_after_step:23", [10, 20]),
        ("online", "kill_in_checkpoint:20", [10]),
        ("dataset", "kill_before_rename:20", [10]),
    ],
)
def test_killed_run_resumes_to_identical_parameters(tmp_path, kit, data, fault, kept):
    ref, run = tmp_path / "ref", tmp_path / "run"
    args = BASE + ["--data", data]
    kit.script.main(args + ["--out", str(ref), "--quiet"])

    proc = kit.run_script(args + ["--out", str(run)], fault=fault)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == kept
    assert not (run / "results.json").exists()
    tmp = [p for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name]
    if fault.startswith("kill_after_step"):
        assert tmp == []
    else:
        assert len(tmp) == 1 and tmp[0].name.startswith(".step_000000020.pt.tmp-")
        if fault.startswith("kill_in_checkpoint"):  # really torn: the half file is unreadable
            with pytest.raises(CheckpointError):
                load_checkpoint(tmp[0])

    with pytest.warns(RuntimeWarning, match="removed unfinished") if tmp else _nothing():
        kit.script.main(args + ["--out", str(run), "--quiet", "--resume"])

    a = kit.load_params(ref / "model.pt")
    b = kit.load_params(run / "model.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert kit.read_metrics(run) == kit.read_metrics(ref)
    assert json.loads((run / "env.json").read_text())["resumed_from_step"] == kept[-1]

    files = sorted((run / "checkpoints").iterdir())
    assert [p.name for p in files] == [f"step_{s:09d}.pt" for s in (10, 20, 30)]
    for p in files:
        state = load_checkpoint(p)
        assert all(torch.isfinite(v).all() for v in state["model"].values())
    final = load_checkpoint(files[-1])
    for k in a:
        assert torch.equal(final["model"][k], a[k])


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_sigterm_checkpoints_the_current_step_and_resume_finishes_identically(tmp_path, kit):
    import os

    from wibergian.train import TrainConfig, Trainer

    def make():
        torch.manual_seed(0)
        return kit.script.Net(0.0).double()

    x, y = kit.script.fixed_data()
    cfg = TrainConfig(steps=15, batch_size=16, lr=0.05, checkpoint_every=10, log_every=2,
                      quiet=True, plot=False)
    calls = [0]

    def loss_fn(m, batch):
        calls[0] += 1
        if calls[0] == 7:
            os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends before pre-emption
        bx, by = batch
        return ((m(bx) - by) ** 2).mean(), {}

    before = signal.getsignal(signal.SIGTERM)
    run = tmp_path / "run"
    stopped = Trainer(make(), loss_fn, (x, y), cfg, run_dir=run).fit()
    assert signal.getsignal(signal.SIGTERM) is before  # handler restored
    assert (stopped.stop_reason, stopped.steps_done) == ("interrupted", 7)
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [7]
    assert json.loads((run / "results.json").read_text())["stop_reason"] == "interrupted"

    resumed = make()
    result = Trainer(resumed, loss_fn, (x, y), cfg, run_dir=run, resume=True).fit()
    ref = make()
    Trainer(ref, loss_fn, (x, y), cfg, run_dir=tmp_path / "ref").fit()
    assert result.stop_reason == "completed"
    for k, v in ref.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v)
    assert kit.read_metrics(run) == kit.read_metrics(tmp_path / "ref")
