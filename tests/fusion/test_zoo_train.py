"""Generated zoo (through the real loader) and a short training on a tiny zoo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wibergian.experiments.fusion.data import frames_from_dataset, split
from wibergian.experiments.fusion.train import FusionSettings, mean_iou, train_model
from wibergian.experiments.fusion.vot import load_dataset, read_regions, result_path
from wibergian.experiments.fusion.zoo import generate, load_config

TINY = {"n_sequences": 5, "n_trackers": 12, "length_min": 50, "length_max": 70,
        "trackers.report_failure_fraction": 0.5, "trackers.hazard_bad": 0.03}


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zoo")
    generate(out, load_config(None, TINY))
    return out


def test_zoo_is_vot_and_deterministic(tiny_zoo: Path, tmp_path: Path) -> None:
    ds = load_dataset(tiny_zoo)
    assert len(ds.trackers) == 12 and len(ds.sequences) == 5
    truth = json.loads((tiny_zoo / "zoo_truth.json").read_text())
    assert "generated" in truth["label"]
    # ground truth written as polygons, trackers start with the initialisation code
    seq = ds.sequences[0].name
    assert read_regions(tiny_zoo / "sequences" / seq / "groundtruth.txt")[0].kind == "polygon"
    first = read_regions(result_path(tiny_zoo, ds.trackers[0], seq))[0]
    assert first.code == 1
    # trackers that report failures write code 2 then 0; they are masked out
    reporters = [i for i, t in enumerate(truth["trackers"]) if t["reports_failure"]]
    codes = {r.code for i in reporters for s in ds.sequences
             for r in read_regions(result_path(tiny_zoo, ds.trackers[i], s.name))}
    assert 2 in codes
    all_valid = all(s.valid[:, 1:].all() for s in ds.sequences)
    assert not all_valid
    # the same configuration writes identical files
    again = tmp_path / "again"
    generate(again, load_config(None, TINY))
    a = result_path(tiny_zoo, ds.trackers[3], seq).read_text()
    assert a == result_path(again, ds.trackers[3], seq).read_text()


def test_config_rejects_unknown_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bogus"):
        load_config(None, {"trackers.bogus": 1})
    assert load_config(None, {"gt_as_polygon": "false"})["gt_as_polygon"] is False
    assert load_config(None, {"trackers.correlation": "0.3"})["trackers"]["correlation"] == 0.3
    with pytest.raises(ValueError, match="expects a int"):
        load_config(None, {"n_trackers": "many"})
    p = tmp_path / "z.toml"
    p.write_text("seed = 1\n")
    with pytest.raises(ValueError, match="missing zoo setting"):
        load_config(p)


def test_short_training_improves_heldout_iou(tiny_zoo: Path) -> None:
    frames = frames_from_dataset(load_dataset(tiny_zoo), dtype=torch.float64)
    tr, te = split(frames, "frames", seed=0)
    train, test = frames.subset(tr), frames.subset(te)
    settings = FusionSettings(steps=40, batch_size=64, lr=0.05, max_iter=20)
    before = mean_iou(settings.model(len(frames.trackers)).double(), test)
    model, record = train_model(train, settings, seed=0, damping=0.1)
    assert record["status"] == "completed"
    after = mean_iou(model, test)
    assert after > before + 0.01, (before, after)
