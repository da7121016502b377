"""Cameras: projection by hand, round trips, distortion formula, json and cameras.h5 loaders."""

import json
import math

import h5py
import numpy as np
import pytest
import torch

from wibergian.data import data_path
from wibergian.experiments.pose import cameras as C

JSON = data_path("h36m_cameras.json")
needs_json = pytest.mark.skipif(not JSON.exists(), reason="no camera json")


def _simple_camera(R=None, t=(0.0, 0.0, -1000.0)):
    return C.Camera(
        R=torch.eye(3, dtype=torch.float64) if R is None else R,
        t=torch.tensor(t, dtype=torch.float64),
        f=torch.tensor([1000.0, 900.0], dtype=torch.float64),
        c=torch.tensor([500.0, 480.0], dtype=torch.float64),
    )


def test_project_hand_computed():
    cam = _simple_camera()
    X = torch.tensor([[100.0, 50.0, 1000.0]], dtype=torch.float64)
    # X_cam = (100, 50, 2000) -> u = (0.05, 0.025)
    assert torch.allclose(cam.project(X), torch.tensor([[550.0, 502.5]], dtype=torch.float64))
    # camera rotated 90 deg about world z: camera x axis = world y, camera y = -world x
    Rz = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    cam = _simple_camera(R=Rz)
    # X_cam = Rz^T (100, 50, 2000) = (50, -100, 2000)
    assert torch.allclose(cam.project(X), torch.tensor([[525.0, 435.0]], dtype=torch.float64))


def test_quaternion_to_matrix_known():
    h = math.sqrt(0.5)
    R = C.quaternion_to_matrix(torch.tensor([h, 0.0, 0.0, h], dtype=torch.float64))
    expect = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(R, expect, atol=1e-12)


def test_distortion_hand_computed():
    cam = _simple_camera()
    cam.k = torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64)
    cam.p = torch.tensor([0.01, 0.02], dtype=torch.float64)
    u = torch.tensor([[0.1, 0.2]], dtype=torch.float64)
    # r2 = 0.05, radial = 1.005, tan = 0.01*0.2 + 0.02*0.1 = 0.004
    expect = torch.tensor([[0.1 * 1.009 + 0.02 * 0.05, 0.2 * 1.009 + 0.01 * 0.05]],
                          dtype=torch.float64)
    assert torch.allclose(cam.distort(u), expect, atol=1e-15)


@needs_json
def test_json_loader_reproduces_published_numbers():
    raw = json.loads(JSON.read_text())
    rigs = C.load_cameras_json(JSON)
    assert sorted(rigs) == sorted(C.SUBJECTS)
    for subj, cams in rigs.items():
        assert len(cams) == 4
        for i, cam in enumerate(cams):
            intr, ext = raw["intrinsics"][i], raw["extrinsics"][subj][i]
            assert cam.name == intr["id"] == C.CAMERA_NAMES[i]
            assert cam.t.tolist() == ext["translation"]
            assert cam.f.tolist() == intr["focal_length"]
            assert cam.c.tolist() == intr["center"]
            assert cam.k.tolist() == intr["radial_distortion"]
            assert torch.allclose(cam.R.T @ cam.R, torch.eye(3, dtype=torch.float64), atol=1e-6)
            assert torch.linalg.det(cam.R) == pytest.approx(1.0, abs=1e-6)
    s1 = rigs["S1"][0]
    assert s1.t.tolist() == [1841.1070556640625, 4955.28466796875, 1563.4454345703125]
    assert s1.f.tolist() == [1145.0494384765625, 1143.7811279296875]
    # every camera looks down at the middle of the room: the look-at point is in front of
    # all cameras, 4-6 m away, below camera height
    centre = C.look_at_point(rigs["S1"])
    for cam in rigs["S1"]:
        depth = float(cam.depth(centre[None])[0])
        assert 4000 < depth < 6500 and float(centre[2]) < float(cam.t[2])


@needs_json
def test_round_trip_batched():
    rig = C.stack_cameras(C.load_cameras_json(JSON, "S9")["S9"])
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(6, 1, 17, 3, generator=gen, dtype=torch.float64) * 500
    X[..., 2] += 900
    px = rig.project(X)  # (6, 4, 17, 2)
    assert px.shape == (6, 4, 17, 2)
    back = rig.backproject(px, rig.depth(X))
    assert torch.allclose(back, X.expand_as(back), atol=1e-8)
    one = C.index_camera(rig, 2)
    assert torch.allclose(one.project(X[:, 0]), px[:, 2], atol=1e-10)


def _release_projection(P, R_stored, T, f, c, k, p):
    """The 3d-pose-baseline projection written out from its formula (numpy, N x 3)."""
    X = R_stored.T @ (P.T - T)
    u = X[:2] / X[2]
    r2 = (u**2).sum(0)
    radial = 1 + k[0] * r2 + k[1] * r2**2 + k[2] * r2**3
    tan = p[0] * u[1] + p[1] * u[0]
    uu = u * (radial + tan) + np.array([[p[1]], [p[0]]]) * r2
    return (f * uu + c).T


def test_cameras_h5_loader_matches_release_formula(tmp_path):
    path = tmp_path / "cameras.h5"
    gen = np.random.default_rng(1)
    stored = {}
    with h5py.File(path, "w") as hf:
        for ci in range(1, 5):
            q = gen.normal(size=4)
            R = C.quaternion_to_matrix(torch.tensor(q)).numpy()
            vals = {
                "R": R, "T": np.array([[3000.0 * ci], [-2000.0], [1500.0]]),
                "f": np.array([[1145.0], [1143.0]]), "c": np.array([[512.0], [515.0]]),
                "k": np.array([[-0.2], [0.24], [-0.003]]), "p": np.array([[-0.001], [0.0014]]),
                "Name": np.frombuffer(C.CAMERA_NAMES[ci - 1].encode(), dtype=np.uint8),
            }
            for key, v in vals.items():
                hf[f"subject9/camera{ci}/{key}"] = v
            stored[ci] = vals
    rigs = C.load_cameras_h5(path, subjects=(9,))
    assert [c.name for c in rigs["S9"]] == list(C.CAMERA_NAMES)
    for ci, cam in enumerate(rigs["S9"], start=1):
        v = stored[ci]
        centre = v["T"][:, 0]
        d = cam.R[:, 2].numpy()  # optical axis
        P = centre + 4000 * d + gen.normal(size=(10, 3)) * 300
        ours = cam.project(torch.from_numpy(P), distortion=True).numpy()
        ref = _release_projection(P, v["R"], v["T"], v["f"], v["c"], v["k"][:, 0], v["p"][:, 0])
        np.testing.assert_allclose(ours, ref, rtol=1e-12)


def test_cameras_h5_missing_dataset_names_file(tmp_path):
    path = tmp_path / "cams.h5"
    with h5py.File(path, "w") as hf:
        hf["subject1/camera1/R"] = np.eye(3)
    with pytest.raises(ValueError, match=r"cams\.h5: missing dataset subject1/camera1/T"):
        C.load_cameras_h5(path, subjects=(1,))


def test_json_bad_entry_names_file(tmp_path):
    raw = json.loads(JSON.read_text()) if JSON.exists() else None
    if raw is None:
        pytest.skip("no camera json")
    raw["extrinsics"]["S1"][2]["translation"] = [1.0, 2.0]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"bad\.json: S1 camera 2 .*'translation'"):
        C.load_cameras_json(bad, "S1")
