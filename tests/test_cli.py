"""The `wibergian` command line: help, argument errors, and `reproduce` assembling report.md."""

from __future__ import annotations

import re
import sys
import types

import pytest

from wibergian import cli


def _subcommands() -> list[str]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return list(action.choices)


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "reproduce" in out and "ransac" in out


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    assert f"usage: wibergian {command}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["ransac", "--seeds", "0"], "--seeds: expected a whole number >= 1, got 0"),
    (["ransac", "--momentum", "1.5"], "momentum must be in [0, 1)"),
    (["ransac", "--lr", "abc"], "--lr: expected a number > 0, got 'abc'"),
    (["reproduce", "--only", "nope"], "invalid choice: 'nope'"),
    (["no-such-command"], "invalid choice"),
])
def test_invalid_arguments_exit_2_with_a_helpful_message(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_out_path_that_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert cli.main(["ransac", "--out", str(f), "--steps", "1", "--seeds", "1"]) == 2
    assert "is an existing file; give a folder path" in capsys.readouterr().err


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "usage: wibergian" in capsys.readouterr().out


def _quick_env(monkeypatch):
    monkeypatch.setenv("WIBERGIAN_RANSAC_QUICK_STEPS", "3")
    monkeypatch.setenv("WIBERGIAN_RANSAC_QUICK_NTEST", "50")


def test_reproduce_quick_ransac_writes_report_with_table_and_images(tmp_path, monkeypatch):
    _quick_env(monkeypatch)
    rc = cli.main(["reproduce", "--quick", "--only", "ransac", "--out", str(tmp_path),
                   "--quiet"])
    assert rc == 0
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# wibergian")
    assert "Machine:" in report and "torch" in report
    assert "Data: generated" in report
    assert "| method | diverged |" in report and "| plain mean |" in report
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert links, "the report has no figures"
    for link in links:
        assert (tmp_path / link).is_file(), link
    assert (tmp_path / "ransac" / "ransac.json").is_file()


def test_reproduce_keeps_sections_when_one_fails_and_exits_1(tmp_path, monkeypatch, capsys):
    def ok(out_dir, quick):
        out_dir.mkdir(parents=True)
        (out_dir / "fig.png").write_bytes(b"png")
        return "## fake ransac\n\n| a | b |\n|---|---|\n\n![f](fig.png)"

    def boom(out_dir, quick):
        raise RuntimeError("deliberate failure for the test")

    for name, fn in (("ransac", ok), ("pose", boom)):
        fake = types.ModuleType(f"wibergian.experiments.{name}.cli")
        fake.reproduce = fn
        monkeypatch.setitem(sys.modules, f"wibergian.experiments.{name}.cli", fake)
    for name in ("fusion", "endtoend"):  # "missing"
        monkeypatch.setitem(sys.modules, f"wibergian.experiments.{name}.cli", None)
    rc = cli.main(["reproduce", "--quick", "--out", str(tmp_path), "--quiet"])
    assert rc == 1
    report = (tmp_path / "report.md").read_text()
    assert "| ransac | ok |" in report and "## fake ransac" in report
    assert "![f](ransac/fig.png)" in report  # link rebased onto the report folder
    assert "| pose | failed |" in report and "deliberate failure for the test" in report
    assert "RuntimeError" in report
    assert "| fusion | not available |" in report and "| endtoend | not available |" in report
    assert "1 experiment(s) failed: pose" in capsys.readouterr().err


@pytest.fixture
def no_data_loads(monkeypatch):
    """Any attempt to read experiment data fails the test."""
    def forbidden(*a, **k):
        raise AssertionError("data was loaded before the flags were checked")

    from wibergian.experiments.fusion import cli as fuse_cli
    from wibergian.experiments.pose import cli as pose_cli

    monkeypatch.setattr(fuse_cli, "load_dataset", forbidden)
    monkeypatch.setattr(pose_cli, "_load_data", forbidden)


@pytest.mark.parametrize("command", [["fuse", "train"], ["pose", "train"]])
def test_optimizer_choices_are_in_help(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([*command, "--help"])
    m = re.search(r"--optimizer \{([a-z,]+)\}", capsys.readouterr().out)
    assert m and {"adam", "adamw", "sgd"} <= set(m.group(1).split(","))


@pytest.mark.parametrize("argv, needle, code", [
    (["fuse", "train", "--optimizer", "rmsprop"], "invalid choice: 'rmsprop'", "exit"),
    (["pose", "train", "--optimizer", "rmsprop"], "invalid choice: 'rmsprop'", "exit"),
    (["fuse", "train", "--momentum", "0.9"], "optimizer 'adam' would ignore it", 2),
    (["fuse", "train", "--optimizer", "sgd", "--lr", "-1"], "lr", 2),
    (["pose", "train", "--steps", "0"], "steps", 2),
    (["pose", "train", "--batch-size", "0"], "batch_size", 2),
])
def test_bad_training_flags_fail_before_any_data_or_folder(argv, needle, code, tmp_path,
                                                           capsys, no_data_loads):
    out = tmp_path / "run"
    full = [*argv, "--out", str(out)] + (["--data", str(tmp_path / "zoo")]
                                         if argv[0] == "fuse" else [])
    if code == "exit":
        with pytest.raises(SystemExit) as e:
            cli.main(full)
        assert e.value.code == 2
    else:
        assert cli.main(full) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()  # no half-made run folder


def test_missing_vot_experiment_lists_the_existing_ones(tmp_path):
    from wibergian.experiments.fusion.vot import VOTFormatError, list_trackers

    for tracker in ("KCF", "SiamFC"):
        for exp in ("baseline", "unsupervised"):
            (tmp_path / "results" / tracker / exp).mkdir(parents=True)
    with pytest.raises(VOTFormatError, match="experiments present: baseline, unsupervised"):
        list_trackers(tmp_path, "realtime")
