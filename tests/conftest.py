"""Suite-wide settings.

One intra-op thread: the suite's tensors are small, and on a 2-core machine running other work,
PyTorch's spinning worker threads make small ops up to 100x slower (measured here).

Hypothesis: when the environment variable ``CI`` is set (CI runs with ``CI=true``), the "ci"
profile makes the property tests deterministic: derandomised examples, no example database (no
state carried between runs) and the blob that reproduces a failure printed. Developers keep the
default profile (random examples, failures saved to ``.hypothesis/``).
"""

import os

import torch
from hypothesis import settings

torch.set_num_threads(1)

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
    settings.load_profile("ci")
