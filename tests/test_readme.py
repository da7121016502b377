"""The README's ten-line example runs as pasted and learns what it says it learns."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_shrinks_the_kernel():
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    code = blocks[0]
    torch.manual_seed(0)
    out = io.StringIO()
    scope: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), scope)
    assert scope["sigma"].item() < 10.0  # from 20 towards the inlier scale
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("step   0")
