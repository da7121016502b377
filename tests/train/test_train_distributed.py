"""Distributed data parallel: 2 processes under torchrun (gloo, CPU) vs 1 process, same global
batch; and the batch-splitting rule."""

from __future__ import annotations

import json

import pytest
import torch

from wibergian.train.distributed import DistInfo
from wibergian.train.sampling import split_batch


def test_two_processes_match_one_process(tmp_path, kit):
    """Index-sampled tensors and on-the-fly data, each trained by 1 process and by 2 processes
    at global batch 16 (8 per process): final float64 parameters agree to 1e-6."""
    args = ["--data", "tensors,online", "--steps", "20", "--batch-size", "16", "--lr", "0.05",
            "--checkpoint-every", "10"]
    proc = kit.run_script(args + ["--out", str(tmp_path / "two")], nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kit.script.main(args + ["--out", str(tmp_path / "one"), "--quiet"])

    for data in ("tensors", "online"):
        one, two = tmp_path / "one" / data, tmp_path / "two" / data
        p1 = kit.load_params(one / "model.pt")
        p2 = kit.load_params(two / "model.pt")
        assert p1.keys() == p2.keys()
        for k in p1:
            assert p1[k].dtype == torch.float64
            torch.testing.assert_close(p2[k], p1[k], rtol=0, atol=1e-6)

        # the logged loss is the mean over the global batch, whatever the number of processes
        m1, m2 = kit.read_metrics(one), kit.read_metrics(two)
        assert [r["step"] for r in m1] == [r["step"] for r in m2]
        for r1, r2 in zip(m1, m2, strict=True):
            for k in r1:
                if isinstance(r1[k], float):
                    assert r2[k] == pytest.approx(r1[k], rel=1e-9, abs=1e-12), (r1, r2)

        env = json.loads((two / "env.json").read_text())
        assert env["world_size"] == 2 and env["backend"] == "gloo"
        assert json.loads((two / "results.json").read_text())["world_size"] == 2
        # only rank 0 wrote: one set of checkpoints, no stray temporary files
        names = sorted(p.name for p in (two / "checkpoints").iterdir())
        assert names == ["step_000000010.pt", "step_000000020.pt"]


def test_training_moved_the_parameters(tmp_path, kit):
    """Guard for the test above: 20 steps change the parameters by far more than 1e-6."""
    kit.script.main(["--steps", "1", "--out", str(tmp_path / "a"), "--quiet", "--lr", "1e-12"])
    kit.script.main(["--steps", "20", "--out", str(tmp_path / "b"), "--quiet"])
    a = kit.load_params(tmp_path / "a" / "model.pt")
    b = kit.load_params(tmp_path / "b" / "model.pt")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) > 1e-2


def test_split_batch_slices_rows_of_the_batch_dimension_only():
    x = torch.arange(8.0).reshape(4, 2)
    shared = torch.ones(3)
    batch = {"x": x, "pair": (x[:, 0], shared), "name": "a"}
    parts = [split_batch(batch, DistInfo(rank=r, world_size=2)) for r in range(2)]
    torch.testing.assert_close(torch.cat([p["x"] for p in parts]), x)
    torch.testing.assert_close(parts[1]["pair"][0], x[2:, 0])
    assert parts[1]["pair"][1] is shared and parts[1]["name"] == "a"
    with pytest.raises(ValueError, match="does not split evenly across 3"):
        split_batch(batch, DistInfo(rank=0, world_size=3))
