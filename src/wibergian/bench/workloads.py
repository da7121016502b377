"""The three benchmark workloads, defined once and shared by every method (torch and JAX).

One module per family (``w1.py``, ``w2.py``, ``w3.py``); this one is the index every method
imports from.

All data here is **generated** (seeded) except W3's clean image, which is a real photograph
bundled with scikit-image; its noise is generated.

- W1, fusion-like (``w1.py``, ``n = 2``): 72 Gaussian wells per problem (43 inliers around the
  ground truth, 29 outliers) with learnable weights and widths; start at the lowest-energy
  candidate, then damped Newton.
- W2, pose-like (``w2.py``, ``n = 40``): weighted linear least squares with a learnable
  ``68×40`` matrix and prior scales; one ``40×40`` factorisation per problem.
- W3, large (``w3.py``, ``n = H·W``): field-of-experts-like denoising of a real image with
  learnable filters, weights and scales.

Each family's module states its energy, data and loss.
"""

from __future__ import annotations

from .w1 import (
    K_WELLS,
    N_INLIERS,
    W1Data,
    W1Energy,
    make_w1,
    w1_best_candidate,
    w1_energy,
    w1_loss,
)
from .w2 import (
    W2_DIM,
    W2_ROWS,
    W2Data,
    W2Energy,
    make_w2,
    w2_design,
    w2_energy,
    w2_loss,
    w2_normal_matrix,
)
from .w3 import W3Data, W3Energy, make_w3, w3_loss

__all__ = [
    "K_WELLS",
    "N_INLIERS",
    "W1Data",
    "W1Energy",
    "W2Data",
    "W2Energy",
    "W2_DIM",
    "W2_ROWS",
    "W3Data",
    "W3Energy",
    "make_w1",
    "make_w2",
    "make_w3",
    "w1_best_candidate",
    "w1_energy",
    "w1_loss",
    "w2_design",
    "w2_energy",
    "w2_loss",
    "w2_normal_matrix",
    "w3_loss",
]
