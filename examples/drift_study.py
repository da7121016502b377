"""How far is the damped gradient from the exact implicit gradient and from finite differences
of the minimiser actually computed, as a function of λ and of the smallest Hessian eigenvalue?
How often do finite differences jump basin? How do the two adjoints behave when the inner solver
is stopped after a few iterations? (Generated Gaussian-well and MLESAC problems.)

A thin front end to ``wibergian endtoend drift``; writes drift.json and drift.png.

    python examples/drift_study.py --quick --out runs/drift_quick
"""

from __future__ import annotations

import argparse
from typing import Any

from wibergian.experiments.endtoend.cli import add_drift_args, cmd_drift


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_drift_args(ap)
    return cmd_drift(ap.parse_args(argv))


if __name__ == "__main__":
    main()
