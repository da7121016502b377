"""A NaN loss, gradient or parameter stops the run naming the step and the quantity, and the
last good checkpoint stays intact and finite."""

from __future__ import annotations

import json

import pytest
import torch

from wibergian.train import NonFiniteError, TrainConfig, Trainer, list_checkpoints, load_checkpoint


def _setup(kit, seed=0):
    torch.manual_seed(seed)
    model = kit.script.Net(0.0).double()
    x, y = kit.script.fixed_data()
    return model, (x, y)


def _cfg(**kw):
    base = dict(steps=20, batch_size=16, lr=0.05, checkpoint_every=5, log_every=1, quiet=True,
                plot=False, keep_checkpoints=None)
    base.update(kw)
    return TrainConfig(**base)


def _assert_intact(run, step, reference_params):
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == list(range(5, step + 1, 5))
    state = load_checkpoint(run / "checkpoints" / f"step_{step:09d}.pt")
    assert state["step"] == step
    for k, v in state["model"].items():
        assert torch.isfinite(v).all(), k
        assert torch.equal(v, reference_params[k]), k


def _params_after(kit, steps, tmp_path):
    """Parameters of a clean run stopped after ``steps`` updates (what the last good
    checkpoint must hold)."""
    model, data = _setup(kit)
    Trainer(model, _mse, data, _cfg(steps=steps, checkpoint_every=0),
            run_dir=tmp_path / f"clean{steps}").fit()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _mse(m, batch):
    bx, by = batch
    return ((m(bx) - by) ** 2).mean(), {}


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path, kit):
    model, data = _setup(kit)
    calls = [0]

    def loss_fn(m, batch):
        calls[0] += 1
        loss, metrics = _mse(m, batch)
        return (loss * float("nan") if calls[0] >= 7 else loss), metrics

    run = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=r"non-finite loss at step 7") as info:
        Trainer(model, loss_fn, data, _cfg(), run_dir=run).fit()
    err = info.value
    assert err.step == 7 and err.quantity == "loss"
    assert err.last_checkpoint == run / "checkpoints" / "step_000000005.pt"
    assert str(err.last_checkpoint) in str(err)
    _assert_intact(run, 5, _params_after(kit, 5, tmp_path))
    results = json.loads((run / "results.json").read_text())
    assert results["stop_reason"] == "non_finite" and results["step"] == 7
    # metrics logged up to step 6 only
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


def test_nan_gradient_names_the_parameter(tmp_path, kit):
    model, data = _setup(kit)
    calls = [0]

    def poison(g):
        calls[0] += 1
        return g * float("inf") if calls[0] == 12 else g

    model.argmin.energy.s.register_hook(poison)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteError) as info:
        Trainer(model, _mse, data, _cfg(), run_dir=run).fit()
    assert info.value.step == 12
    assert info.value.quantity == "gradient of parameter 'argmin.energy.s'"
    assert "step 12" in str(info.value) and "'argmin.energy.s'" in str(info.value)
    _assert_intact(run, 10, _params_after(kit, 10, tmp_path))


class _CorruptingSGD(torch.optim.SGD):
    """SGD that writes a NaN into one parameter at its 10th step (finite loss and gradients)."""

    def step(self, closure=None):
        out = super().step(closure)
        self.count = getattr(self, "count", 0) + 1
        if self.count == 10:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return out


def test_nan_parameter_is_never_checkpointed(tmp_path, kit):
    model, data = _setup(kit)
    opt = _CorruptingSGD(model.parameters(), lr=0.05)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteError) as info:
        Trainer(model, _mse, data, _cfg(checkpoint_every=5), run_dir=run, optimizer=opt).fit()
    # the NaN appears in the update of step 10, whose checkpoint is then refused
    assert info.value.step == 10
    assert info.value.quantity == "parameter 'enc.weight'"
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [5]
    state = load_checkpoint(run / "checkpoints" / "step_000000005.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values())
