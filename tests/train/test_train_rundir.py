"""Run folder contents, configuration round trip, refusing to clobber a run, extending a run,
and the shared command-line flags."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from wibergian.train import (
    TrainConfig,
    Trainer,
    add_train_args,
    config_from_args,
    list_checkpoints,
    load_checkpoint,
    run_dir_from_args,
)


def _mse(m, batch):
    bx, by = batch
    err = m(bx) - by
    return (err**2).mean(), {"mae": err.abs().mean()}


def _run(kit, run_dir, resume=False, seed=0, **kw):
    torch.manual_seed(seed)
    model = kit.script.Net(0.0).double()
    x, y = kit.script.fixed_data()
    base = dict(steps=30, batch_size=16, lr=0.05, checkpoint_every=10, keep_checkpoints=2,
                log_every=5, eval_every=10, quiet=True, plot=False, extra={"name": "tiny"})
    base.update(kw)
    cfg = TrainConfig(**base)

    def eval_fn(m):
        with torch.no_grad():
            return {"mse": ((m(x) - y) ** 2).mean()}

    result = Trainer(model, _mse, (x, y), cfg, run_dir=run_dir, resume=resume,
                     eval_fn=eval_fn).fit()
    return model, cfg, result


def test_run_folder_contents(tmp_path, kit):
    run = tmp_path / "run"
    model, cfg, result = _run(kit, run, plot=True)

    names = {p.name for p in run.iterdir()} - {"tensorboard"}  # present if tensorboard is installed
    assert names == {"checkpoints", "config.json", "env.json", "loss.png", "metrics.jsonl",
                     "model.pt", "results.json"}
    saved = json.loads((run / "config.json").read_text())
    assert saved == cfg.to_dict() and TrainConfig.from_dict(saved) == cfg
    assert saved["extra"] == {"name": "tiny"}

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in records] == [
        (5, "train"), (10, "train"), (10, "eval"), (15, "train"), (20, "train"), (20, "eval"),
        (25, "train"), (30, "train"), (30, "eval"),
    ]
    assert records == json.loads(json.dumps(result.history))
    train = [r for r in records if r["split"] == "train"]
    assert set(train[0]) == {"step", "split", "loss", "mae", "grad_norm", "lr", "epoch", "wall"}
    assert train[-1]["loss"] < train[0]["loss"]  # it trained
    assert records[-1]["mse"] == pytest.approx(result.final_eval["mse"])

    # keep_checkpoints=2: only the two newest remain, each complete
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [20, 30]
    assert not [p for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name]
    final = load_checkpoint(run / "checkpoints" / "step_000000030.pt")
    params = torch.load(run / "model.pt", weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(params[k], v) and torch.equal(final["model"][k], v)

    res = json.loads((run / "results.json").read_text())
    assert res["stop_reason"] == "completed" == result.stop_reason
    assert res["steps_done"] == 30 and res["final_loss"] == result.final_loss
    assert Path(res["last_checkpoint"]) == run / "checkpoints" / "step_000000030.pt"
    env = json.loads((run / "env.json").read_text())
    assert env["world_size"] == 1 and env["torch"] == torch.__version__
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_existing_run_is_not_clobbered_and_resume_checks_config(tmp_path, kit):
    run = tmp_path / "run"
    model, _, _ = _run(kit, run)
    with pytest.raises(FileExistsError, match="already holds a run"):
        _run(kit, run)
    with pytest.raises(ValueError, match=r"lr \(0.05 -> 0.1\)"):
        _run(kit, run, resume=True, lr=0.1)
    # resuming a finished run trains nothing and reports so
    again, _, result = _run(kit, run, resume=True, seed=5)
    assert result.stop_reason == "already_complete"
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)


def test_extending_a_finished_run_equals_a_longer_run(tmp_path, kit):
    _run(kit, tmp_path / "a", steps=20)
    ext, _, result = _run(kit, tmp_path / "a", resume=True, steps=30)
    full, _, _ = _run(kit, tmp_path / "b", steps=30)
    assert result.stop_reason == "completed"
    for k, v in full.state_dict().items():
        assert torch.equal(ext.state_dict()[k], v)


def test_no_run_dir_writes_nothing(tmp_path, kit, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, _, result = _run(kit, None, steps=5)
    assert list(tmp_path.iterdir()) == [] and result.last_checkpoint is None
    assert result.history[-1]["step"] == 5


def test_cli_flags_round_trip(tmp_path):
    parser = argparse.ArgumentParser()
    add_train_args(parser, TrainConfig(steps=11, lr=0.5))
    args = parser.parse_args([])
    cfg = config_from_args(args)
    assert (cfg.steps, cfg.lr, cfg.quiet) == (11, 0.5, False)
    assert run_dir_from_args(args) == (None, False)

    args = parser.parse_args(["--steps", "7", "--batch-size", "4", "--lr", "0.01", "--seed", "3",
                              "--checkpoint-every", "2", "--quiet", "--resume", "--out",
                              str(tmp_path)])
    cfg = config_from_args(args, plot=False)
    assert (cfg.steps, cfg.batch_size, cfg.lr, cfg.seed, cfg.checkpoint_every, cfg.quiet,
            cfg.plot) == (7, 4, 0.01, 3, 2, True, False)
    assert run_dir_from_args(args) == (tmp_path, True)
    assert run_dir_from_args(parser.parse_args(["--resume", "x"])) == (Path("x"), True)
    with pytest.raises(ValueError, match="different run folders"):
        run_dir_from_args(parser.parse_args(["--resume", "x", "--out", "y"]))
    with pytest.raises(ValueError, match="--resume needs a run folder"):
        run_dir_from_args(parser.parse_args(["--resume"]))


@pytest.mark.parametrize("field, value, msg", [
    ("steps", 0, "steps = 0"),
    ("optimizer", "lbfgs", "optimizer = 'lbfgs'"),
    ("lr", float("nan"), "lr = nan"),
    ("lr_schedule", "step", "lr_step_size"),
])
def test_bad_config_names_the_field(field, value, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**{field: value})


class _FakeWriter:
    """Stands in for torch.utils.tensorboard.SummaryWriter (tensorboard is optional)."""

    made: list[_FakeWriter] = []

    def __init__(self, logdir: str, purge_step: int | None = None) -> None:
        self.logdir, self.purge_step, self.scalars, self.closed = logdir, purge_step, [], False
        _FakeWriter.made.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def close(self) -> None:
        self.closed = True


def test_tensorboard_gets_every_logged_scalar_and_purges_on_resume(tmp_path, kit, monkeypatch):
    import sys
    import types

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = _FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    _FakeWriter.made.clear()
    run = tmp_path / "run"
    _run(kit, run, steps=10)
    _run(kit, run, steps=20, resume=True)
    first, second = _FakeWriter.made
    assert first.logdir == str(run / "tensorboard") and first.purge_step is None
    assert second.purge_step == 11 and first.closed and second.closed
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {(tag, step): v for w in (first, second) for tag, v, step in w.scalars}
    for r in records:
        for k, v in r.items():
            if k not in ("step", "split"):
                assert logged[(f"{r['split']}/{k}", r["step"])] == v
