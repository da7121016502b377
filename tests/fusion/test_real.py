"""The real-tracker data set: the shipped packed outputs, the builder (needs OpenCV) and the
exactness of the rendered ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wibergian.experiments.fusion.data import single_tracker_iou
from wibergian.experiments.fusion.real import (
    FULL,
    QUICK_SEQUENCES,
    load_real,
    pack,
    real_dataset,
    unpack,
)
from wibergian.experiments.fusion.vot import (
    Region,
    load_dataset,
    read_regions,
    result_path,
    write_regions,
    write_sequence_list,
)


def test_shipped_real_tracker_data_loads_and_is_plausible() -> None:
    from wibergian.experiments.fusion.trackers import CONFIGS

    ds = real_dataset(quick=False)
    assert len(ds.sequences) == FULL["n_sequences"] >= 40
    assert ds.n_frames >= 8000
    assert ds.trackers == sorted(c.name for c in CONFIGS) and len(ds.trackers) >= 15
    for s in ds.sequences:
        assert not s.valid[:, 0].any()                         # frame 0: initialisation
        np.testing.assert_array_equal(s.first_size, np.broadcast_to(s.gt[0, 2:], (16, 2)))
        assert np.isfinite(s.gt).all() and (s.gt[:, 2:] > 5).all()
        c = s.gt[:, :2] + s.gt[:, 2:] / 2                      # object centre inside the frame
        assert (c >= 0).all() and (c[:, 0] <= 256).all() and (c[:, 1] <= 192).all()
    f = load_real(quick=True)
    assert len(f.names) == QUICK_SEQUENCES and len(f) > 2000
    single = single_tracker_iou(f)
    # real trackers: a usable best one, a wide spread, some that report losses
    assert 0.35 < float(single.max()) < 0.95 and float(single.min()) < 0.3
    assert 0.3 < float(f.valid.double().mean()) < 0.99


def test_pack_round_trip(tmp_path: Path) -> None:
    gt = [Region.rectangle(10.25, 5, 20, 30.5)] * 3 + [Region.rectangle(11, 6.75, 21, 31)]
    write_regions(tmp_path / "sequences" / "a" / "groundtruth.txt", gt)
    write_regions(tmp_path / "sequences" / "b" / "groundtruth.txt", gt[:2])
    write_sequence_list(tmp_path, ["a", "b"])
    res = {"t1": [Region.special(1), Region.rectangle(9.5, 5, 20, 30), Region.special(0),
                  Region.rectangle(1, 2, 3, 4.01)],
           "t2": [Region.special(1), Region.special(2), Region.special(0),
                  Region.rectangle(0, 0, 5, 5)]}
    for t, regs in res.items():
        write_regions(result_path(tmp_path, t, "a"), regs)
        write_regions(result_path(tmp_path, t, "b"), regs[:2])
    ds = load_dataset(tmp_path)
    back = unpack(pack(ds, tmp_path / "p.npz"))
    assert back.trackers == ds.trackers
    for s, t in zip(ds.sequences, back.sequences, strict=True):
        assert s.name == t.name
        np.testing.assert_array_equal(s.gt, t.gt)
        np.testing.assert_array_equal(s.valid, t.valid)
        np.testing.assert_array_equal(s.first_size, t.first_size)
        np.testing.assert_array_equal(np.where(s.valid[..., None], s.boxes, 0),
                                      np.where(t.valid[..., None], t.boxes, 0))


def test_rendered_object_covers_exactly_its_box() -> None:
    pytest.importorskip("cv2")
    from wibergian.experiments.fusion.video import _warp

    patch = np.full((37, 23, 3), 100.0, np.float32)
    for box in ([40.3, 50.7, 30.2, 18.9], [3.5, 4.25, 61.0, 44.4]):   # inside the frame
        col, alpha, win = _warp(patch, np.array(box))
        assert alpha.sum() == pytest.approx(box[2] * box[3], rel=1e-5)   # exact pixel coverage
        # the box's edges, read back from the partial coverage of the border pixels
        for axis, start, lo, size in ((0, win[1].start, box[0], box[2]),
                                      (1, win[0].start, box[1], box[3])):
            cov = alpha.max(axis=axis)
            k = np.flatnonzero(cov)
            assert start + k[0] + 1 - cov[k[0]] == pytest.approx(lo, abs=1e-5)
            assert start + k[-1] + cov[k[-1]] == pytest.approx(lo + size, abs=1e-5)
        np.testing.assert_allclose(col, np.broadcast_to(100 * alpha[..., None], col.shape),
                                   rtol=1e-5, atol=1e-3)


def test_builder_on_a_tiny_sequence(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    pytest.importorskip("skimage")
    from wibergian.experiments.fusion.real import build, sequence_plan
    from wibergian.experiments.fusion.trackers import config_by_name, run_tracker
    from wibergian.experiments.fusion.video import render_sequence

    out = build(tmp_path / "r", n_sequences=1, length_min=9, length_max=9, seed=3,
                workers=1, quiet=True, trackers=["kcf", "mosse"])
    (name, seq_seed, length), = sequence_plan(1, 9, 9, 3)
    frames, gt = render_sequence(seq_seed, length)
    ds = load_dataset(out)
    assert ds.trackers == ["kcf", "mosse"] and ds.sequences[0].name == name
    s = ds.sequences[0]
    np.testing.assert_array_equal(s.gt, np.round(gt, 2))        # exact truth, 0.01 px
    for t, trk in enumerate(ds.trackers):
        regs = read_regions(result_path(out, trk, name))
        assert len(regs) == length and regs[0].code == 1        # initialised once, frame 0
        want = run_tracker(config_by_name(trk), frames, gt[0])  # deterministic
        got = np.where(s.valid[t, :, None], s.boxes[t], np.nan)
        np.testing.assert_array_equal(np.isnan(got[1:, 0]), np.isnan(want[1:, 0]))
        ok = ~np.isnan(want[:, 0])
        np.testing.assert_allclose(got[ok], np.round(want[ok], 2), atol=1e-9, rtol=0)
    packed = unpack(out / "real_trackers.npz")
    np.testing.assert_array_equal(packed.sequences[0].gt, s.gt)
    np.testing.assert_array_equal(packed.sequences[0].valid, s.valid)
    # cached: a second build leaves the files alone
    p = result_path(out, "kcf", name)
    before = p.stat().st_mtime_ns
    build(tmp_path / "r", n_sequences=1, length_min=9, length_max=9, seed=3, workers=1,
          quiet=True, trackers=["kcf", "mosse"])
    assert p.stat().st_mtime_ns == before
    with pytest.raises(SystemExit, match="other settings"):
        build(tmp_path / "r", n_sequences=2, length_min=9, length_max=9, seed=3, workers=1,
              quiet=True, trackers=["kcf", "mosse"])
    assert torch.is_tensor(torch.as_tensor(s.gt))
