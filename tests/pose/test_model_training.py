"""Training through the argmin lowers held-out error; runs save and load exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wibergian.experiments.pose import datasets
from wibergian.experiments.pose.evaluate import evaluate_model
from wibergian.experiments.pose.grid_search import apply
from wibergian.experiments.pose.model import BASIS_GROUP, ModelConfig
from wibergian.experiments.pose.train import build_model, load_model, save_model, train_model
from wibergian.train import TrainConfig


@pytest.fixture(scope="module")
def data() -> datasets.PoseData:
    return datasets.load_default()


@pytest.fixture()
def one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def test_short_training_reduces_held_out_p1(data: datasets.PoseData, one_thread: None) -> None:
    test = data.test().subset(torch.arange(0, 141, 3))
    model = build_model(data, ModelConfig(mode="multi", loss="l2", grid=12), 2, 4)
    before = evaluate_model(model, test)["P1"]
    cfg = TrainConfig(steps=25, batch_size=16, lr=2e-2, quiet=True, checkpoint_every=0,
                      plot=False)
    model, info = train_model(model, data.train(), cfg)
    after = evaluate_model(model, test)["P1"]
    assert info["steps"] == 25
    assert after < before - 2.0, (before, after)


def test_save_load_round_trip_and_learnable_groups(data: datasets.PoseData,
                                                   tmp_path: Path) -> None:
    model = build_model(data, ModelConfig(mode="multi", loss="huber", grid=8), 2, 3)
    k, b, j, c = 2, 3, 17, data.num_cameras
    # μ, e, σ, joint weights, camera weights, ρ, δ, T, fusion biases
    assert model.num_learnable() == k * j * 3 + k * b * j * 3 + k * b + k * j * 2 + c + 3 + k
    model.set_learnable("basis")
    learnable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert learnable == set(BASIS_GROUP)
    apply(model, {"reg": 2.0, "temp": 0.5, "robust": 1.5})
    save_model(model, tmp_path)
    again = load_model(tmp_path)
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), again.state_dict().items(),
                                  strict=True):
        assert n1 == n2 and torch.equal(p1, p2)
    frames = data.test().subset(torch.arange(4))
    assert evaluate_model(model, frames)["P1"] == evaluate_model(again, frames)["P1"]
    with pytest.raises(FileNotFoundError, match="pose_model.json"):
        load_model(tmp_path / "nothing")
