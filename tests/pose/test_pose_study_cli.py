"""`wibergian pose study` and `pose evaluate --untrained` end to end on a tiny pose file, and
`--help` showing defaults (generated detections of the built-in real motion)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wibergian.cli import build_parser, main
from wibergian.experiments.pose import datasets
from wibergian.experiments.pose.study import paired


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    poses = datasets.load_default().poses3d[:300:3].numpy()  # 100 frames
    path = tmp_path_factory.mktemp("poses") / "tiny.npy"
    np.save(path, poses.astype(np.float32))
    return path


def test_paired_interval_closed_form():
    r = paired([10.0, 12.0, 14.0], [11.0, 14.0, 17.0])  # d = -1, -2, -3
    assert r["diff"] == pytest.approx(-2.0)
    assert r["ci"] == pytest.approx(4.303 * 1.0 / 3 ** 0.5, rel=1e-3)
    assert r["rel"] == pytest.approx(-2.0 / 14.0)


def test_study_on_a_tiny_pose_file(tmp_path, tiny_file, capsys):
    out = tmp_path / "study"
    rc = main(["pose", "study", "--tiny", "--poses", str(tiny_file), "--train-fraction", "0.6",
               "--gap", "4", "--variants", "untrained_l2", "untrained_huber", "trained_huber",
               "grid_search", "--out", str(out), "--quiet"])
    assert rc in (0, None)
    res = json.loads((out / "study.json").read_text())
    assert res["data"]["train_frames"] == 60 and res["data"]["test_frames"] == 36
    runs = res["runs"]["multi"]
    assert set(runs) == {"untrained_l2", "untrained_huber", "trained_huber", "grid_search"}
    assert all(set(v) == {"0", "1"} for v in runs.values())  # two seeds each
    # the detector seed follows the study seed: different untrained errors per seed
    assert runs["untrained_huber"]["0"]["P1"] != runs["untrained_huber"]["1"]["P1"]
    row = res["table"]["multi"]["trained_huber"]
    d = [runs["trained_huber"][k]["P1"] - runs["untrained_huber"][k]["P1"] for k in ("0", "1")]
    assert row["paired_vs_baseline"]["diff"] == pytest.approx(sum(d) / 2)
    assert {"P1_median", "P1_p90", "over_500mm"} <= set(row)
    md = (out / "study.md").read_text()
    assert "untrained, Huber (baseline)" in md and "tiny.npy" in md


def test_evaluate_untrained_on_a_pose_file(tmp_path, tiny_file):
    out = tmp_path / "eval.json"
    main(["pose", "evaluate", "--untrained", "--models", "2", "--basis", "4",
          "--rotation-grid", "8", "--poses", str(tiny_file), "--subsample", "4",
          "--out", str(out), "--quiet"])
    m = json.loads(out.read_text())
    assert m["frames"] == 25 and m["mode"] == "multi"
    assert m["P1_median"] <= m["P1_p90"] and m["over_500mm"] >= 0
    assert m["skeleton"]["handedness_vote"] > 0.9


@pytest.mark.parametrize("cmd", ["train", "evaluate", "study"])
def test_help_shows_defaults(cmd):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    pose = sub.choices["pose"]
    psub = next(a for a in pose._actions if a.__class__.__name__ == "_SubParsersAction")
    text = " ".join(psub.choices[cmd].format_help().split())
    assert "(default: 24)" in text  # --gap
    assert "--detector-seed" in text and "(default: 0)" in text
    if cmd != "study":
        assert "--loss {l2,huber}" in text and "(default: huber)" in text
        assert "--rotation-grid" in text and "not the reviewers' grid" in text


def test_evaluate_checks_the_runs_training_skeleton(tmp_path, tiny_file, capsys):
    """`pose train` stores the training skeleton; `pose evaluate --run` compares user poses
    with it (a Spine moved to 1/3 of its height is refused, naming the bone)."""
    run = tmp_path / "run"
    main(["pose", "train", "--poses", str(tiny_file), "--models", "2", "--basis", "4",
          "--rotation-grid", "8", "--steps", "1", "--batch-size", "4", "--gap", "4",
          "--out", str(run), "--quiet"])
    meta = json.loads((run / "pose_model.json").read_text())
    assert len(meta["skeleton_bone_median_mm"]) == 16
    p = np.load(tiny_file)
    p[:, 7] = p[:, 0] + (p[:, 7] - p[:, 0]) / 3.0
    bad = tmp_path / "other.npy"
    np.save(bad, p)
    capsys.readouterr()
    rc = main(["pose", "evaluate", "--run", str(run), "--poses", str(bad), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "other.npy" in err and "Hip->Spine" in err, err


def test_train_with_a_wide_model_saves_and_reloads_it(tmp_path, tiny_file):
    """`pose train --wide-basis 6` trains K + 1 models (bases padded to 6) and `pose evaluate
    --run` reloads exactly that model: same held-out P1 as train reported."""
    run = tmp_path / "wide"
    main(["pose", "train", "--poses", str(tiny_file), "--models", "2", "--basis", "4",
          "--wide-basis", "6", "--rotation-grid", "8", "--steps", "1", "--batch-size", "4",
          "--train-fraction", "0.7", "--gap", "4", "--out", str(run), "--quiet"])
    meta = json.loads((run / "pose_model.json").read_text())
    assert (meta["num_models"], meta["num_basis"]) == (3, 6)
    trained = json.loads((run / "metrics.json").read_text())["trained"]["P1"]
    main(["pose", "evaluate", "--run", str(run), "--poses", str(tiny_file), "--train-fraction",
          "0.7", "--gap", "4", "--quiet"])
    evals = list(run.glob("eval_*.json"))
    assert len(evals) == 1
    assert json.loads(evals[0].read_text())["P1"] == pytest.approx(trained, rel=1e-9)
    with pytest.raises(SystemExit, match="pose-prior"):
        main(["pose", "train", "--poses", str(tiny_file), "--wide-basis", "6", "--pose-prior",
              "train", "--out", str(tmp_path / "no"), "--quiet"])


def test_train_into_a_used_folder_is_refused_before_any_data_loads(tmp_path, monkeypatch,
                                                                   capsys):
    """A second `pose train --out DIR` without --resume stops at once (exit 2, the message says
    how to resume), before the data are read; the folder's files are left as they were."""
    from wibergian.experiments.pose import cli as pose_cli

    run = tmp_path / "used"
    run.mkdir()
    (run / "config.json").write_text('{"steps": 3}')

    def no_data(*args, **kwargs):
        raise AssertionError("data loaded before the run folder was checked")

    monkeypatch.setattr(pose_cli, "_load_data", no_data)
    rc = main(["pose", "train", "--out", str(run), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err
    assert (run / "config.json").read_text() == '{"steps": 3}'
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]
