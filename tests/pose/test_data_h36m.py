"""Human3.6M loaders on tiny files in the 3d-pose-baseline layout."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from wibergian.data import data_path
from wibergian.experiments.pose import cameras as C
from wibergian.experiments.pose import datasets, h36m
from wibergian.experiments.pose import skeleton as sk

JSON = data_path("h36m_cameras.json")


def _raw32(T, seed):
    """(T, 32, 3) raw poses whose 17 used joints sit in front of the cameras."""
    gen = np.random.default_rng(seed)
    raw = gen.normal(size=(T, 32, 3)) * 200
    raw[..., 2] += 900
    return raw


def _write_release(root: Path, takes: dict, cams=C.CAMERA_NAMES, transpose=True, sh_missing=()):
    """takes: {(subject, file stem): T}; writes 3D files and SH detections for each camera."""
    truth = {}
    for (s, stem), T in takes.items():
        raw = _raw32(T, seed=len(truth))
        pdir = root / f"S{s}" / "MyPoses" / "3D_positions"
        pdir.mkdir(parents=True, exist_ok=True)
        flat = raw.reshape(T, 96)
        with h5py.File(pdir / f"{stem}.h5", "w") as hf:
            hf["3D_positions"] = flat.T if transpose else flat
        ddir = root / f"S{s}" / "StackedHourglass"
        ddir.mkdir(parents=True, exist_ok=True)
        sh = {}
        for ci, cam in enumerate(cams):
            if (s, stem, cam) in sh_missing:
                continue
            det = np.random.default_rng(ci).uniform(0, 1000, size=(T + 2, 16, 2))
            with h5py.File(ddir / f"{stem.replace(' ', '_')}.{cam}.h5", "w") as hf:
                hf["poses"] = det
            sh[cam] = det
        truth[(s, stem)] = (raw, sh)
    return truth


def test_canonical_action_names():
    assert h36m.canonical_action("Directions 1") == "Directions"
    assert h36m.canonical_action("TakingPhoto_2") == "Photo"
    assert h36m.canonical_action("WalkingDog") == "WalkDog"
    assert h36m.canonical_action("SittingDown 1") == "SittingDown"
    assert h36m.canonical_action("Sitting") == "Sitting"
    with pytest.raises(h36m.H36MFormatError, match=r"x\.h5: unknown Human3\.6M action"):
        h36m.canonical_action("Dancing 1", "x.h5")


@pytest.mark.parametrize("transpose", [True, False])
def test_read_positions3d_layouts(tmp_path, transpose):
    truth = _write_release(tmp_path, {(1, "Eating 2"): 7}, transpose=transpose)
    raw, _ = truth[(1, "Eating 2")]
    p = h36m.read_positions3d(tmp_path / "S1/MyPoses/3D_positions/Eating 2.h5")
    assert p.shape == (7, 17, 3)
    np.testing.assert_array_equal(p, raw[:, list(sk.H36M32_TO_17)])


def test_read_errors_name_file(tmp_path):
    bad = tmp_path / "Walking.h5"
    with h5py.File(bad, "w") as hf:
        hf["3D_positions"] = np.zeros((10, 50))
    with pytest.raises(h36m.H36MFormatError, match=r"Walking\.h5: '3D_positions' has shape"):
        h36m.read_positions3d(bad)
    with h5py.File(bad, "w") as hf:
        hf["other"] = np.zeros(3)
    with pytest.raises(h36m.H36MFormatError, match=r"Walking\.h5: no dataset 'poses'"):
        h36m.read_stacked_hourglass(bad)
    with h5py.File(bad, "w") as hf:
        hf["3D_positions"] = np.full((96, 4), np.nan)
    with pytest.raises(h36m.H36MFormatError, match=r"Walking\.h5: .*NaN"):
        h36m.read_positions3d(bad)


def test_load_sequences_subsamples_and_aligns(tmp_path):
    takes = {(1, "Directions 1"): 23, (1, "WalkDog"): 12, (9, "Greeting 1"): 11}
    truth = _write_release(tmp_path, takes, sh_missing={(1, "WalkDog", C.CAMERA_NAMES[0])})
    skipped = []
    seqs = h36m.load_sequences(tmp_path, subjects=(1, 9), skipped=skipped)
    assert [(q.subject, q.action) for q in seqs] == [("S1", "Directions"), ("S9", "Greeting")]
    assert len(skipped) == 1 and "WalkDog" in skipped[0] and C.CAMERA_NAMES[0] in skipped[0]
    d = seqs[0]
    assert d.frames.tolist() == [0, 5, 10, 15, 20]
    raw, sh = truth[(1, "Directions 1")]
    np.testing.assert_array_equal(d.poses3d, raw[::5][:, list(sk.H36M32_TO_17)])
    assert d.poses2d.shape == (5, 4, 17, 2)
    # camera axis in file order; RWrist (17-index 16) is SH index 10
    np.testing.assert_array_equal(d.poses2d[:, 2, 16], sh[C.CAMERA_NAMES[2]][:23:5, 10])
    assert not d.visible[..., 9].any() and d.visible[..., 10].all()


@pytest.mark.skipif(not JSON.exists(), reason="no camera json")
def test_load_h36m_split_and_cameras(tmp_path):
    takes = {(1, "Directions 1"): 20, (5, "Eating"): 10, (9, "Greeting 1"): 15}
    _write_release(tmp_path, takes)
    data = datasets.load_h36m(tmp_path, train_subjects=(1, 5), test_subjects=(9,))
    assert data.num_frames == 4 + 2 + 3
    assert data.train_idx.tolist() == list(range(6)) and data.test_idx.tolist() == [6, 7, 8]
    assert data.actions[6] == "Greeting" and data.subjects[6] == "S9"
    assert not data.generated and data.poses2d.shape == (9, 4, 17, 2)
    cb = data.camera_batch(data.test_idx)
    json_s9 = C.load_cameras_json(JSON, "S9")["S9"]
    assert torch.equal(cb.t[0, 1], json_s9[1].t)
    # simulated detections: exact projections through the subject's own cameras
    sim = datasets.load_h36m(tmp_path, train_subjects=(1, 5), test_subjects=(9,),
                             detections="simulated")
    assert sim.generated
    proj = sim.camera_batch().project(sim.poses3d.unsqueeze(1))
    assert torch.allclose(proj, sim.poses2d_clean)


@pytest.mark.skipif(not JSON.exists(), reason="no camera json")
def test_load_h36m_uses_cameras_h5(tmp_path):
    _write_release(tmp_path, {(9, "Posing"): 5})
    rig = C.load_cameras_json(JSON, "S9")["S9"]
    with h5py.File(tmp_path / "cameras.h5", "w") as hf:
        for ci, cam in enumerate(rig, start=1):
            g = f"subject9/camera{ci}/"
            hf[g + "R"] = cam.R.numpy()
            hf[g + "T"] = cam.t.numpy()[:, None] + 10.0  # differs from the json
            for key, v in (("f", cam.f), ("c", cam.c), ("k", cam.k), ("p", cam.p)):
                hf[g + key] = v.numpy()[:, None]
            hf[g + "Name"] = np.frombuffer(cam.name.encode(), dtype=np.uint8)
    data = datasets.load_h36m(tmp_path, train_subjects=(), test_subjects=(9,))
    assert torch.allclose(data.cameras[0].t, rig[0].t + 10.0)
