"""Protocols (frame / sequence splits), masking of missing trackers, single-tracker IoU."""

from __future__ import annotations

import torch

from wibergian.experiments.fusion.data import Frames, single_tracker_iou, split
from wibergian.experiments.fusion.energy import FusionModel


def _frames(n_seq: int = 9, per: int = 30, T: int = 3) -> Frames:
    N = n_seq * per
    g = torch.Generator().manual_seed(0)
    gt = torch.tensor([50.0, 40.0, 20.0, 10.0]).expand(N, 4).clone()
    boxes = gt.unsqueeze(1) + torch.randn(N, T, 4, generator=g)
    return Frames(boxes, torch.ones(N, T, dtype=torch.bool), gt,
                  torch.arange(N, dtype=torch.float32) % per + 1,
                  torch.tensor([20.0, 10.0]).expand(N, T, 2).clone(),
                  torch.arange(N) // per, [f"s{i}" for i in range(n_seq)],
                  [f"t{i}" for i in range(T)])


def test_frame_protocol_two_thirds_disjoint() -> None:
    f = _frames()
    tr, te = split(f, "frames", seed=3)
    assert len(tr) == round(2 / 3 * len(f)) and len(tr) + len(te) == len(f)
    assert not set(tr.tolist()) & set(te.tolist())
    # frames of a sequence land on both sides (the leak the reviewers point at)
    assert set(f.seq[tr].tolist()) & set(f.seq[te].tolist())


def test_sequence_protocol_keeps_sequences_whole() -> None:
    f = _frames()
    tr, te = split(f, "sequences", seed=3)
    assert len(tr) + len(te) == len(f)
    assert not set(f.seq[tr].tolist()) & set(f.seq[te].tolist())
    assert abs(len(tr) / len(f) - 2 / 3) <= 30 / len(f) + 1e-9
    tr2, _ = split(f, "sequences", seed=4)
    tr3, _ = split(f, "sequences", seed=3)
    assert torch.equal(tr, tr3) and not torch.equal(tr, tr2)


def test_missing_tracker_is_masked() -> None:
    """A tracker without a region (failure code) has m_t = 0: moving its (placeholder) box
    far away changes neither the weights nor the fused box."""
    f = _frames(1, 4, 4)
    model = FusionModel(4)
    f.valid[:, 3] = False
    a = model.predict_boxes(*f.inputs()).detach()
    f.boxes[:, 3] = torch.tensor([900.0, 900.0, 5.0, 5.0])
    b = model.predict_boxes(*f.inputs()).detach()
    torch.testing.assert_close(a, b)
    assert (model.mixing_weights(*f.inputs())[:, 3] == 0).all()


def test_single_tracker_iou_counts_missing_as_zero() -> None:
    f = _frames(1, 4, 2)
    f.boxes[:] = f.gt.unsqueeze(1)
    f.valid[:2, 1] = False
    torch.testing.assert_close(single_tracker_iou(f), torch.tensor([1.0, 0.5]))
