"""IoU and box conversions against hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from wibergian.experiments.fusion.data import Frames, crowd_fusion
from wibergian.experiments.fusion.geometry import (
    box_to_corners,
    corners_to_box,
    iou,
    polygon_to_box,
)

CASES = [
    ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
    ((0, 0, 10, 10), (5, 0, 10, 10), 50 / 150),          # half overlap in x
    ((0, 0, 10, 10), (5, 5, 10, 10), 25 / 175),          # quarter overlap
    ((0, 0, 10, 10), (2, 2, 4, 4), 16 / 100),            # contained
    ((0, 0, 10, 10), (10, 0, 10, 10), 0.0),              # touching edges
    ((0, 0, 10, 10), (20, 20, 5, 5), 0.0),               # disjoint
    ((0, 0, 4, 2), (1, -1, 2, 6), 4 / (8 + 12 - 4)),     # cross shape
    ((0, 0, 10, 10), (3, 3, -2, 5), 0.0),                # inverted box = empty
    ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),                   # both empty
]


@pytest.mark.parametrize("a, b, expected", CASES)
def test_iou_hand_computed(a: tuple, b: tuple, expected: float) -> None:
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    assert float(iou(ta, tb)) == pytest.approx(expected, abs=1e-12)
    assert float(iou(tb, ta)) == pytest.approx(expected, abs=1e-12)


def test_iou_batched_and_corners_round_trip() -> None:
    a = torch.tensor([c[0] for c in CASES], dtype=torch.float64)
    b = torch.tensor([c[1] for c in CASES], dtype=torch.float64)
    expected = torch.tensor([c[2] for c in CASES], dtype=torch.float64)
    torch.testing.assert_close(iou(a, b), expected)
    torch.testing.assert_close(corners_to_box(box_to_corners(a)), a)
    assert box_to_corners(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist() == [1, 2, 4, 6]


def test_polygon_rule_and_errors() -> None:
    # a diamond: the min/max box of its vertices
    assert polygon_to_box([5, 0, 10, 5, 5, 10, 0, 5]) == (0, 0, 10, 10)
    with pytest.raises(ValueError, match="even number"):
        polygon_to_box([1, 2, 3, 4, 5])


def test_crowd_fusion_hand_computed() -> None:
    boxes = torch.tensor([[[0., 0, 10, 10], [2, 2, 10, 10], [100, 100, 10, 10],
                           [7, 7, 1, 1]]])
    valid = torch.tensor([[True, True, True, False]])
    z = torch.zeros(1)
    f = Frames(boxes, valid, torch.zeros(1, 4), z, torch.ones(1, 4, 2), z.long(), ["s"],
               list("abcd"))
    # mean of corners (0,0,10,10), (2,2,12,12), (100,100,110,110); invalid one ignored
    torch.testing.assert_close(crowd_fusion(f, "mean"), torch.tensor([[34., 34, 10, 10]]))
    torch.testing.assert_close(crowd_fusion(f, "median"), torch.tensor([[2., 2, 10, 10]]))
