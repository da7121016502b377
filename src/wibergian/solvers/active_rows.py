"""Evaluating only the problems still active (the Newton solver's last iterations).

Problems converge at different iterations: on the dense ridge-logistic workload (``D``,
B = 1,000, generated, seed 0) 955 problems stop after 4 Newton iterations at n = 8 and 2 need a
5th, whose full-batch value-gradient-Hessian is then spent on 2 rows. When at most a fraction of
the ``B`` problems is active, :class:`ActiveRows` evaluates those rows alone: ``y`` and the
parameters are sliced (a parameter whose first dimension is ``B`` is batched, any other shared:
the rule of ``multistart.py``), and the stopped rows keep their values, gradients and Hessians
(their step is zero, so the trial point is the current one).

- An eager energy is evaluated on the active rows when they are at most :data:`EAGER_FRACTION`
  of the batch (its cost is proportional to the rows).
- A compiled energy (``compiled.py``) has kernels for one block size; a subset would compile a new
  one for every size. Its active rows are evaluated when they are at most
  :data:`COMPILED_FRACTION` of the batch: up to :data:`SUBSET_ROWS` of them by one more compiled
  kernel of that many rows (the rows and the batched parameters padded by repeating the first
  row, the padded results dropped; built once per energy, the first time, and only for batches
  larger than that), more by the eager energy (an eager pass over a few rows costs less than the
  compiled pass over all of them). On D at n = 8 the eager pass over the last iterations' rows
  took 1.6 ms of a 23 ms call.

Newton-CG (``newton_cg.py``) uses the same rule and check for whole iterations: its running
problems go on as a sub-batch (:meth:`ActiveRows.params_for` gives their parameters), its
Hessian-vector products then only touch their rows. On D at n = 128 (Newton-CG, B = 1,000), 998
problems stop after 5 iterations and the probe and CG of the 6th ran over the whole batch for 2.

The slicing rule cannot tell a shared parameter whose first dimension happens to be ``B`` from
a batched one. So the first subset of a solve is checked: the energy of the sliced problems at
their current points must equal the values the full-batch evaluation gave there (relative
``sqrt(eps)``). If it does not, or the sliced call raises (a shared matrix sliced to the wrong
shape), the solve evaluates the whole batch from then on (counted in :data:`COUNTS`
``["refused"]``); ``COUNTS["evaluated"]`` counts the subset evaluations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..derivatives import energy_value, value_gradient_hessian
from ..energy import EnergyFn

#: an eager energy is evaluated on the active rows when they are at most this fraction of B
EAGER_FRACTION = 0.5
#: a compiled energy's active rows are evaluated alone when at most this fraction of B
COMPILED_FRACTION = 1 / 16
#: up to this many active rows of a compiled energy go through its kernel of this many rows
#: (padded); ``0``: always its eager function
SUBSET_ROWS = 64
#: subset evaluations made, and solves whose slicing failed the value check
COUNTS = {"evaluated": 0, "refused": 0}


class ActiveRows:
    """Value, gradient and Hessian of the active problems only, for one solve.

    Args:
        energy: the solver's energy (a ``CompiledEnergy`` or a plain one).
        params: the solve's (detached) parameters.
        batch: ``B``.
    """

    def __init__(self, energy: EnergyFn, params: Sequence[Tensor], batch: int) -> None:
        from ..compiled import CompiledEnergy

        compiled = isinstance(energy, CompiledEnergy)
        self.compiled = energy if compiled else None
        self.energy = energy.energy if compiled else energy
        self.limit = (COMPILED_FRACTION if compiled else EAGER_FRACTION) * batch
        self.params = list(params)
        self.batch = batch
        self.flags = [p.dim() >= 1 and p.shape[0] == batch for p in self.params]
        self.checked = False
        self.refused = False

    def wants(self, active: int) -> bool:
        """Whether ``active`` rows are few enough to be evaluated alone."""
        return not self.refused and 0 < active <= self.limit

    def _sliced(self, rows: Tensor) -> list[Tensor]:
        return [p.index_select(0, rows) if f else p
                for p, f in zip(self.params, self.flags, strict=True)]

    def params_for(self, rows: Tensor, y: Tensor, e: Tensor) -> list[Tensor] | None:
        """The parameters of the problems ``rows``; ``None`` when the slicing fails its check
        (the first call compares the sliced energies at ``y[rows]`` with ``e[rows]``)."""
        ps = self._sliced(rows)
        try:
            if not self.checked:
                self.checked = True
                with torch.no_grad():
                    got = energy_value(self.energy, y.index_select(0, rows), ps)
                want = e.index_select(0, rows)
                tol = torch.finfo(e.dtype).eps ** 0.5 * (1 + want.abs())
                if not bool(((got - want).abs() <= tol).all()):
                    raise ValueError("the sliced problems' energies differ")
        except Exception:  # noqa: BLE001 - a shared parameter was sliced (shapes or values)
            return self._refuse()
        return ps

    def _refuse(self) -> None:
        self.refused = True
        COUNTS["refused"] += 1
        return None

    def evaluate(self, rows: Tensor, y_new: Tensor, y: Tensor, e: Tensor, g: Tensor, h: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(E, ∇E, H)`` at ``y_new`` ``(B, n)`` for every problem, computing only ``rows``
        (the others did not move: their ``e, g, h`` at ``y`` are returned); ``None`` when the
        slicing fails its check (the caller evaluates the whole batch)."""
        ps = self.params_for(rows, y, e)
        if ps is None:
            return None
        y_s = y_new.index_select(0, rows)
        try:
            out = self._compiled_rows(y_s, ps)
            e_s, g_s, h_s = out if out is not None else value_gradient_hessian(
                self.energy, y_s, ps)
        except Exception:  # noqa: BLE001 - a shared parameter was sliced (shapes)
            return self._refuse()
        COUNTS["evaluated"] += 1
        return (e.index_copy(0, rows, e_s), g.index_copy(0, rows, g_s),
                h.index_copy(0, rows, h_s.to(h.dtype)))

    def _compiled_rows(self, y: Tensor, ps: list[Tensor]) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(E, ∇E, H)`` of ``k ≤ SUBSET_ROWS`` rows by the compiled energy's kernel of
        ``SUBSET_ROWS`` rows (padded inputs, padded results dropped); ``None`` where that path
        does not apply (eager energy, more rows, a batch no larger than the padded block: a new
        kernel would cost more than it saves; compilation given up)."""
        ce, k = self.compiled, y.shape[0]
        if ce is None or k > SUBSET_ROWS or self.batch <= SUBSET_ROWS or ce.error is not None:
            return None
        from ..compiled import pad_rows

        flags = list(self.flags)
        yp = pad_rows(y, SUBSET_ROWS)
        pp = [pad_rows(p, SUBSET_ROWS) if f else p for p, f in zip(ps, flags, strict=True)]
        e, g, h = ce._run("vgh", ce._vgh_route(y.shape[-1]), yp, pp, flags=flags,
                          block=SUBSET_ROWS)
        return e[:k], g[:k], h[:k]
