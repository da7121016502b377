"""Suite-wide settings.

One intra-op thread: the suite's tensors are small, and on a 2-core machine running other work,
PyTorch's spinning worker threads make small ops up to 100x slower (measured here).

Hypothesis: when the environment variable ``CI`` is set (CI runs with ``CI=true``), the "ci"
profile makes the property tests deterministic: derandomised examples, no example database (no
state carried between runs) and the blob that reproduces a failure printed. Developers keep the
default profile (random examples, failures saved to ``.hypothesis/``).

``argmin``'s default ``compile="auto"`` compiles an energy after 20 calls of one shape, which would
put seconds of compilation into whichever test happens to make the 21st call: the suite runs with
it off (``WIBERGIAN_AUTO_COMPILE_AFTER=0``, inherited by the CLI tests' subprocesses). The switch
itself is tested in ``tests/core/test_auto_compile.py``; the compiled path against eager in
``tests/core/test_perf_paths.py``, ``test_compile_guard.py`` and ``test_simplify.py``.
"""

import os

os.environ["WIBERGIAN_AUTO_COMPILE_AFTER"] = "0"  # before wibergian is imported (docstring)

import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

import wibergian.auto_compile  # noqa: E402

wibergian.auto_compile.AFTER_CALLS = 0  # if a plug-in imported wibergian before this file

torch.set_num_threads(1)

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
    settings.load_profile("ci")
