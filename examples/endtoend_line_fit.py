"""End to end: an MLP maps per-point descriptors to weights of a robust line fit solved by
``wibergian.argmin``; trained through the minimiser with the shared trainer and compared with
uniform weights, λ = 0, an inlier classifier and unrolled IRLS (generated data).

A thin front end to ``wibergian endtoend study`` (see docs/endtoend.md).

    python examples/endtoend_line_fit.py --quick --out runs/e2e_quick
    python examples/endtoend_line_fit.py --out runs/endtoend          # 5 seeds, a few minutes
"""

from __future__ import annotations

import argparse
from typing import Any

from wibergian.experiments.endtoend.cli import add_study_args, cmd_study


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_study_args(ap)
    return cmd_study(ap.parse_args(argv))


if __name__ == "__main__":
    main()
