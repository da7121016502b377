"""The generalisation recipes: augmentation keeps bodies plausible, the anchor penalty is the
squared distance to the initialisation, early stopping restores the best validation state,
and the validation split comes from the end of the training frames."""

from __future__ import annotations

import pytest
import torch

from wibergian.experiments.pose import datasets, plausibility
from wibergian.experiments.pose import skeleton as sk
from wibergian.experiments.pose.augment import (
    augment_poses,
    augmented_training_data,
    validation_split,
)
from wibergian.experiments.pose.model import ModelConfig
from wibergian.experiments.pose.train import anchor_penalty, build_model, train_model
from wibergian.train import TrainConfig


@pytest.fixture(scope="module")
def default():
    return datasets.load_default()


def test_augmented_poses_keep_bones_handedness_and_floor(default):
    p = default.poses3d[:40]
    aug = augment_poses(p, 2, seed=3)
    assert aug.shape == (80, 17, 3)
    # copy 0: same labels; copy 1: mirrored, so its left bones are the original right ones
    ref = torch.cat([sk.bone_lengths(p), sk.bone_lengths(sk.flip_left_right(p))])
    ratio = sk.bone_lengths(aug) / ref
    # one scale factor per frame and copy, in [0.9, 1.1]
    assert float((ratio - ratio[:, :1]).abs().max()) < 1e-9
    assert 0.9 <= float(ratio.min()) and float(ratio.max()) <= 1.1
    # mirrored copies are relabelled: still correctly handed; z stays up, feet above the floor
    assert float((plausibility.handedness_votes(aug) > 0).double().mean()) > 0.95
    assert float(aug[..., 2].min()) > 0.0
    # the mirrored copy is not the original relabelled (the geometry is reflected)
    assert not torch.allclose(aug[40:], sk.flip_left_right(p))


def test_augmented_training_data_appends_seen_frames(default):
    train = default.train().subset(torch.arange(20))
    out = augmented_training_data(train, 1, seed=0)
    assert out.num_frames == 40 and out.train_idx.numel() == 40
    torch.testing.assert_close(out.poses2d[:20], train.poses2d)
    assert out.poses2d.shape == (40, 4, 17, 2) and out.visible[20:].any()


def test_validation_split_takes_the_end_after_a_gap(default):
    train = default.train()
    fit, val = validation_split(train, 0.2, gap=12)
    n_val = round(0.2 * train.num_frames)
    assert val.num_frames == n_val and fit.num_frames == train.num_frames - n_val - 12
    torch.testing.assert_close(val.poses3d, train.poses3d[-n_val:])
    with pytest.raises(ValueError, match="validation fraction"):
        validation_split(train, 1.5)


def test_anchor_penalty_is_squared_distance_to_init(default):
    model = build_model(default, ModelConfig(mode="multi", loss="huber", grid=8), 2, 4)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert float(anchor_penalty(model, init)) == 0.0
    with torch.no_grad():
        model.log_reg.add_(0.5)
        model.mean[0, 3, 1] += 0.02
    assert float(anchor_penalty(model, init)) == pytest.approx(0.25 + 0.0004)
    model.set_learnable("scalars")  # only learnable parameters count
    assert float(anchor_penalty(model, init)) == pytest.approx(0.25)


def test_strong_anchor_holds_parameters_and_early_stopping_restores_best(default):
    train = default.train().subset(torch.arange(0, 380, 10))
    val = default.train().subset(torch.arange(5, 380, 40))
    cfg = TrainConfig(steps=4, batch_size=8, lr=5e-2, quiet=True, checkpoint_every=0,
                      plot=False, eval_every=1)
    free = build_model(default, ModelConfig(mode="multi", loss="huber", grid=8), 2, 4)
    init = {n: p.detach().clone() for n, p in free.named_parameters()}
    free, _ = train_model(free, train, cfg, learn="scalars")
    held = build_model(default, ModelConfig(mode="multi", loss="huber", grid=8), 2, 4)
    held, info = train_model(held, train, cfg, learn="scalars", anchor=1e4, validation=val)
    d_free = float(anchor_penalty(free, init))
    d_held = float(anchor_penalty(held, init))
    assert d_free > 0 and d_held < 0.1 * d_free
    assert 0 <= info["best_step"] <= 4 and info["validation_frames"] == val.num_frames
    from wibergian.experiments.pose.evaluate import evaluate_model
    assert float(evaluate_model(held, val)["P1"]) == pytest.approx(info["best_val_P1"])
