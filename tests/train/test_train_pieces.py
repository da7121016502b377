"""Sampler, learning-rate schedules, gradient clipping, atomic writes, progress lines."""

from __future__ import annotations

import io
import math
import pickle

import pytest
import torch
from torch import nn

from wibergian.train import CheckpointError, TrainConfig, Trainer, load_checkpoint, lr_factor
from wibergian.train.checkpoint import write_atomic
from wibergian.train.progress import Progress
from wibergian.train.sampling import EpochSampler


def test_sampler_sees_each_example_once_per_epoch_and_resumes_exactly():
    s = EpochSampler(10, torch.Generator().manual_seed(0))
    stream = torch.cat([s.next_indices(4) for _ in range(5)])  # 20 = two epochs, straddling
    for e in range(2):
        assert sorted(stream[10 * e : 10 * (e + 1)].tolist()) == list(range(10))
    state = pickle.loads(pickle.dumps(s.state_dict()))
    ahead = torch.cat([s.next_indices(3) for _ in range(7)])
    t = EpochSampler(10, torch.Generator().manual_seed(123))  # different seed, then restored
    t.load_state_dict(state)
    assert torch.equal(torch.cat([t.next_indices(3) for _ in range(7)]), ahead)
    with pytest.raises(ValueError, match="made with 10 training examples"):
        EpochSampler(11, torch.Generator()).load_state_dict(state)


def test_lr_schedules_closed_forms():
    cos = TrainConfig(steps=100, lr=0.1, lr_min=0.01, lr_schedule="cosine")
    m = 0.1
    assert lr_factor(cos, 1) == pytest.approx(1.0)
    assert lr_factor(cos, 51) == pytest.approx(m + (1 - m) * 0.5)
    assert lr_factor(cos, 26) == pytest.approx(m + (1 - m) * 0.5 * (1 + math.cos(math.pi / 4)))
    step = TrainConfig(steps=100, lr_schedule="step", lr_step_size=10, lr_gamma=0.5)
    assert [lr_factor(step, s) for s in (1, 10, 11, 21, 100)] == [1, 1, 0.5, 0.25, 0.5**9]
    warm = TrainConfig(steps=100, lr_warmup_steps=4)
    assert [lr_factor(warm, s) for s in (1, 2, 4, 5)] == [0.25, 0.5, 1.0, 1.0]


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3, dtype=torch.float64))


def test_grad_norm_logged_and_clipped_update():
    """Loss 0.5 mean((X w - y)^2): gradient X^T (X w - y) / N; with SGD (lr 1) and clip c the
    first update is -c g / |g|."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    y = 10 * torch.randn(8, generator=g, dtype=torch.float64)
    model = _Linear()

    def loss_fn(m, batch):
        bx, by = batch
        return 0.5 * ((bx @ m.w - by) ** 2).mean(), {}

    grad = x.T @ (x @ torch.zeros(3, dtype=torch.float64) - y) / 8
    assert grad.norm() > 0.5
    cfg = TrainConfig(steps=1, batch_size=8, lr=1.0, optimizer="sgd", grad_clip=0.5,
                      log_every=1, quiet=True, plot=False)
    result = Trainer(model, loss_fn, (x, y), cfg).fit()
    assert result.history[0]["grad_norm"] == pytest.approx(float(grad.norm()), rel=1e-12)
    # torch's clip_grad_norm_ scales by c / (|g| + 1e-6)
    expected = -0.5 * grad / (grad.norm() + 1e-6)
    torch.testing.assert_close(model.w.detach(), expected, rtol=1e-12, atol=1e-14)


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "x.pt"
    write_atomic(path, {"a": torch.ones(2)})
    with pytest.raises(RuntimeError, match="cannot pickle"):
        write_atomic(path, {"a": _Unpicklable()})
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
    with pytest.raises(CheckpointError, match=r"x\.pt: not a trainer checkpoint"):
        load_checkpoint(path)


def test_progress_lines_show_step_loss_rate_and_time_left():
    out = io.StringIO()
    p = Progress(total=10, initial=0, mode="lines", stream=out)
    for _ in range(5):
        p.update()
    p.record({"step": 5, "split": "train", "loss": 0.123456, "mae": 2.0, "lr": 0.1})
    line = out.getvalue()
    assert line.startswith("step 5/10 loss 0.1235 mae 2 |") and "it/s" in line
    assert line.rstrip().endswith("left")
    quiet = io.StringIO()
    q = Progress(total=10, initial=0, mode="off", stream=quiet)
    q.record({"step": 5, "split": "train", "loss": 1.0})
    q.message("x")
    assert quiet.getvalue() == ""


def test_list_of_examples_is_collated_and_tensors_are_indexed_alike():
    from wibergian.train.distributed import DistInfo
    from wibergian.train.sampling import BatchSource

    xs = torch.arange(12.0).reshape(6, 2)
    examples = [{"x": xs[i], "i": i} for i in range(6)]
    a = BatchSource(examples, 4, torch.Generator().manual_seed(0), DistInfo())
    b = BatchSource({"x": xs, "i": torch.arange(6)}, 4, torch.Generator().manual_seed(0),
                    DistInfo())
    assert (a.kind, b.kind) == ("dataset", "tensors")
    for step in (1, 2, 3):
        ba, bb = a.next_batch(step), b.next_batch(step)
        assert torch.equal(ba["x"], bb["x"]) and torch.equal(ba["i"], bb["i"])
        assert torch.equal(ba["x"], xs[ba["i"]])
    with pytest.raises(ValueError, match="differ in first dimension"):
        BatchSource((xs, torch.zeros(5)), 2, torch.Generator(), DistInfo())
    with pytest.raises(ValueError, match="not divisible by the number of processes"):
        BatchSource((xs,), 3, torch.Generator(), DistInfo(rank=0, world_size=2))
