"""The phase progress display: what each mode prints."""

import io

import pytest

from wibergian.progress import phase


def test_lines_mode_prints_start_tenths_and_end() -> None:
    out = io.StringIO()
    with phase("demo", total=20, unit="step", mode="lines", stream=out) as p:
        for _ in range(20):
            p.update()
    lines = out.getvalue().splitlines()
    assert lines[0] == "[demo] started (20 steps)"
    assert lines[-1].startswith("[demo] done in ")
    middle = lines[1:-1]
    assert 8 <= len(middle) <= 10  # about one line per tenth, none at 100 %
    assert all("left" in line and "/20 steps" in line for line in middle)


def test_quiet_prints_one_line_per_phase() -> None:
    out = io.StringIO()
    with phase("demo", total=5, quiet=True, stream=out) as p:
        p.update(5)
        p.note("not shown")
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[0]]
    assert out.getvalue().startswith("[demo] done in ")


def test_failure_is_reported_and_reraised() -> None:
    out = io.StringIO()
    with pytest.raises(RuntimeError), phase("demo", total=5, mode="off", stream=out):
        raise RuntimeError("boom")
    assert out.getvalue().startswith("[demo] failed in ")


def test_off_prints_nothing() -> None:
    out = io.StringIO()
    with phase("demo", total=3, mode="off", stream=out) as p:
        p.update(3)
        p.note("x")
    assert out.getvalue() == ""
