"""``wibergian bench`` end to end on its smallest setting: JSON, targets table, rendered docs."""

from __future__ import annotations

import json

from wibergian.bench import cli


def test_bench_cli_writes_json_prints_targets_and_renders_docs(tmp_path, capsys):
    docs = tmp_path / "benchmarks.md"
    cli.main(["--quick", "--workload", "W2", "--no-anchors", "--no-compile",
              "--out", str(tmp_path), "--docs", str(docs)])
    out = capsys.readouterr().out
    assert "## Targets (issue 3)" in out
    assert "ours (quadratic, λ=0) backward < autograd through Cholesky" in out
    run = json.loads((tmp_path / "bench_quick.json").read_text())
    (w2,) = run["workloads"]
    assert w2["primary"] == "ours (quadratic, λ=0)"
    rows = w2["methods"]
    assert {"ours (quadratic, λ=0)", "ours (quadratic, λ=0.1)", "ours (lstsq)",
            "torch autograd (cholesky)"} <= set(rows)
    for row in rows.values():  # every method was checked against ours before it was timed
        assert row["agreement_rel_error"] <= row["agreement_tolerance"]
        assert row["forward_s"] > 0 and row["backward_s"] > 0
    assert run["fused_kernels"]["enabled"] is False
    text = docs.read_text()
    assert "### W2, B = 1000" in text and "Fused (torch.compile) kernels: off" in text
