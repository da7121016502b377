"""The user's-energy rows: the energy written in plain PyTorch, ``argmin`` with every default.

No declared derivatives, no bench-only kernel, no solver object: what a user who reads the
README writes. ``compile=True`` rows are the same call with the library's opt-in compiled path
(``wibergian/compiled.py``; its compile time is reported apart as the first call).

Dense ridge-logistic workload ``D`` (**generated**, seed 0): problem ``b`` has features
``X_b`` ``(M, n)`` (``M = 64`` rows, N(0, 1)/√n) and labels ``t_b ∈ {0, 1}^M`` drawn from a
logistic model with a true ``y_b ~ N(0, I)``; with learnable ``log λ`` (scalar, 0) and prior
mean ``μ`` ``(n,)`` (0)

    E_b(y) = Σ_i softplus(x_bi·y) - t_bi x_bi·y + ½ λ ||y - μ||²,

strictly convex, a dense ``n × n`` Hessian ``Xᵀ diag(σ'(Xy)) X + λ I``. Loss: mean over problems
of ``||y*_b - y_b||²``. Anchors: Optimistix Newton root-find of ``∇E`` (ImplicitAdjoint, λ = 0)
and JAXopt ``custom_root`` (ridge-CG, λ = 0.1) around the same Newton iteration, both
``vmap``-ed and jit-compiled; unrolled: autograd (``torch.func``) through the Newton iterations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

import wibergian
from wibergian import auto_compile

from .common import DAMPING, TOL_ITERATIVE, TOL_UNROLLED, BenchMethod, MethodInfo
from .methods_torch import _leaves, _TorchMethod
from .workloads import W1Data, w1_energy, w1_loss

D_ROWS = 64
#: eager calls the default rows may make before ``compile="auto"`` switches (an error if not)
MAX_EAGER_CALLS = 2000
D_TOL = 1e-10  # the anchors' stopping rule (rtol = atol), ours uses its float64 default 1e-8


# ---------------------------------------------------------------------------------------- W1


def own_function(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """A copy of the plain function ``fn`` as a new object: each row its own energy, so the
    compiled rows do not share kernels (each row's first call shows its own compile time) and
    the default row's eager-call count starts from zero."""
    return types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                              fn.__closure__)


class _UserMethod(_TorchMethod):
    """Ours on a user's plain PyTorch energy with ``argmin``'s defaults; ``compile`` is the
    default ``"auto"`` (row "ours (user's energy)"), ``True`` or ``False`` (named in the row).

    The default row is timed in its steady state, like a jit-compiled anchor after its first
    call: :meth:`prepare` makes the ``auto_compile.AFTER_CALLS`` eager calls (untimed), then
    times the call that compiles (its ``first_call_s``). ``max_warmup`` caps the eager calls
    of a slow workload: the switch then comes after that many calls (said in the row's detail);
    the compiled steady state is the same."""

    compile: bool | str = "auto"
    max_warmup: int | None = None
    #: eager calls the default row made before its switch (set by :meth:`prepare`)
    eager_calls: int | None = None
    #: the default row's solver has no compiled kernels, so ``compile="auto"`` leaves it eager
    stays_eager = False

    def _info(self, compile: bool | str, setting: str, damping: float) -> MethodInfo:
        if compile == "auto":
            name = "ours (user's energy)"
            if not auto_compile.AFTER_CALLS:
                how = ", compile='auto' switched off: eager"
            elif self.max_warmup is not None:
                how = (f", compile='auto' timed compiled, after {self.max_warmup} eager warm-up "
                       "call(s) (the switch lowered to keep the bench short)")
            else:
                how = (", compile='auto' timed in its steady state, compiled (after the eager "
                       "calls its switch needs; the first compiled call is the first call)")
        else:
            name = f"ours (user's energy, compile={compile})"
            how = f", compile={compile}"
        detail = (f"plain PyTorch energy, argmin defaults ({setting}damped implicit λ={damping})"
                  + how)
        return MethodInfo(name, "wibergian", detail, damping, TOL_ITERATIVE,
                          stops_when_converged=True)

    @property
    def jit_compiled(self) -> bool:
        return self.compile is True or (self.compile == "auto" and auto_compile.AFTER_CALLS > 0
                                         and not self.stays_eager)

    def prepare(self) -> float:
        """``compile=True``: time the first call. Default: make the eager calls until the switch
        (``auto_compile.AUTO["compiled"]`` counts it), timing the call that compiles."""
        if not self.jit_compiled:
            return 0.0
        if self.compile is True:
            t = time.perf_counter()
            self.gradient()
            return time.perf_counter() - t
        cap = self.max_warmup
        block = (auto_compile.auto_compile_after(cap, unknowns=0) if cap is not None
                 else contextlib.nullcontext())
        with block:
            for calls in range(MAX_EAGER_CALLS):
                before = auto_compile.AUTO["compiled"]
                skipped = auto_compile.AUTO["not_compiled_solver"]
                t = time.perf_counter()
                self.gradient()
                took = time.perf_counter() - t
                if auto_compile.AUTO["compiled"] > before:
                    self.eager_calls = calls  # before the switch (reported in the JSON)
                    return took
                if auto_compile.AUTO["not_compiled_solver"] > skipped:  # never switches: eager
                    self.stays_eager = True
                    self.info = dataclasses.replace(self.info, gradient=self.info.gradient.split(
                        ", compile='auto'")[0] + ", compile='auto': stays eager (solver without "
                        "compiled kernels)")
                    return 0.0
        raise RuntimeError(f"{self.info.name}: compile='auto' did not switch within "
                           f"{MAX_EAGER_CALLS} calls")


class W1User(_UserMethod):
    """W1 as a user writes it: ``w1_energy`` (plain PyTorch), the ``K`` wells as multi-start
    candidates, ``argmin`` defaults (``compile`` optional)."""

    def __init__(self, data: W1Data, compile: bool | str = "auto"):
        self.d = data
        self.compile = compile
        self.energy = own_function(w1_energy)
        self.params = _leaves(m=data.m, s0=data.s0, s1=data.s1)
        self.candidates = torch.stack([data.a, data.c], -1)
        self.info = self._info(compile, "multi-start over the K wells, ", DAMPING)

    def loss(self) -> Tensor:
        p = self.params
        y = wibergian.argmin(self.energy, self.candidates[:, 0],
                             (self.d.a, self.d.c, p["m"], p["s0"], p["s1"]),
                             candidates=self.candidates, warn=False, compile=self.compile)
        return w1_loss(y, self.d.g)


# ------------------------------------------------------------------------------ dense logistic


class DenseData:
    """A generated ridge-logistic instance (see the module doc)."""

    def __init__(self, batch: int, n: int, seed: int = 0, dtype: torch.dtype = torch.float64):
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(batch, D_ROWS, n, generator=gen, dtype=dtype) / n**0.5
        self.y_true = torch.randn(batch, n, generator=gen, dtype=dtype)
        prob = torch.sigmoid((self.x @ self.y_true.unsqueeze(-1)).squeeze(-1))
        self.t = (torch.rand(batch, D_ROWS, generator=gen, dtype=dtype) < prob).to(dtype)
        self.log_lam = torch.zeros((), dtype=dtype)
        self.mu = torch.zeros(n, dtype=dtype)
        self.batch, self.n = batch, n

    def numpy(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k).numpy() for k in ("x", "t", "y_true", "log_lam", "mu")}


def logistic_energy(y: Tensor, x: Tensor, t: Tensor, log_lam: Tensor, mu: Tensor) -> Tensor:
    """``(B,)``: the ridge-logistic energy as a user writes it in PyTorch."""
    z = (x @ y.unsqueeze(-1)).squeeze(-1)
    nll = (torch.nn.functional.softplus(z) - t * z).sum(-1)
    return nll + 0.5 * log_lam.exp() * ((y - mu) ** 2).sum(-1)


class DenseUser(_UserMethod):
    """``argmin(logistic_energy, zeros, (X, t, log λ, μ))`` with every default."""

    def __init__(self, data: DenseData, compile: bool | str = "auto", damping: float = DAMPING):
        self.d = data
        self.compile = compile
        self.damping = damping
        self.energy = own_function(logistic_energy)
        self.params = _leaves(log_lam=data.log_lam, mu=data.mu)
        self.info = self._info(compile, "", damping)

    def loss(self) -> Tensor:
        p = self.params
        y0 = torch.zeros(self.d.batch, self.d.n, dtype=self.d.x.dtype)
        kw: dict[str, Any] = {} if self.damping == DAMPING else {"damping": self.damping,
                                                                 "tol": 1e-12}
        y = wibergian.argmin(self.energy, y0, (self.d.x, self.d.t, p["log_lam"], p["mu"]),
                             warn=False, compile=self.compile, **kw)
        return ((y - self.d.y_true) ** 2).sum(-1).mean()


class DenseUnrolled(_TorchMethod):
    """Autograd through ``iters`` plain Newton iterations, per-problem derivatives by
    ``torch.func`` (``vmap`` of ``grad`` / ``hessian``), differentiable."""

    def __init__(self, data: DenseData, iters: int):
        self.d = data
        self.iters = iters
        self.params = _leaves(log_lam=data.log_lam, mu=data.mu)
        self.info = MethodInfo(f"torch unrolled ({iters} iterations)", "torch",
                               f"autograd through {iters} Newton iterations (torch.func)", 0.0,
                               TOL_UNROLLED)

    def loss(self) -> Tensor:
        from torch.func import grad, hessian, vmap

        p = self.params

        def one(y: Tensor, x: Tensor, t: Tensor) -> Tensor:
            return logistic_energy(y[None], x[None], t[None], p["log_lam"], p["mu"])[0]

        g_fn = vmap(grad(one))
        h_fn = vmap(hessian(one))
        y = torch.zeros(self.d.batch, self.d.n, dtype=self.d.x.dtype)
        for _ in range(self.iters):
            g, h = g_fn(y, self.d.x, self.d.t), h_fn(y, self.d.x, self.d.t)
            y = y - torch.linalg.solve(h, g)
        return ((y - self.d.y_true) ** 2).sum(-1).mean()


def dense_iterations(data: DenseData) -> int:
    """Newton iterations ours needs on this instance (the unrolled baseline gets as many)."""
    y, info = wibergian.argmin(logistic_energy, torch.zeros(data.batch, data.n,
                                                            dtype=data.x.dtype),
                               (data.x, data.t, data.log_lam, data.mu), return_info=True,
                               warn=False)
    return max(1, int(info.iterations.max()))


#: the unrolled baseline runs where its retained graph stays under this many bytes
UNROLLED_MAX_BYTES = 4 << 30


def unrolled_bytes(batch: int, n: int, iters: int) -> int:
    """What the unrolled baseline keeps for its backward, roughly: ``vmap(hessian)`` copies
    ``X`` ``(B, M, n)`` once per direction, each of the ``iters`` iterations (float64)."""
    return batch * D_ROWS * n * n * iters * 8


def dense_suite(batch: int, n: int, anchors: bool = True) -> tuple[list[BenchMethod], Any]:
    """The D workload's methods: ours with every default (``compile="auto"``), with
    ``compile=True`` and ``False``, the unrolled baseline (where :func:`unrolled_bytes` stays
    under :data:`UNROLLED_MAX_BYTES`: not at n = 128, B = 1,000, which would need ~50 GB) and
    the JAX anchors."""
    d = DenseData(batch, n)
    methods: list[BenchMethod] = [DenseUser(d), DenseUser(d, compile=True),
                                  DenseUser(d, compile=False)]
    iters = dense_iterations(d) + 1
    if unrolled_bytes(batch, n, iters) <= UNROLLED_MAX_BYTES:
        methods.append(DenseUnrolled(d, iters))
    if anchors:
        try:
            from .methods_jax import dense_methods
        except ImportError:
            pass
        else:
            methods.extend(dense_methods(d.numpy(), D_TOL))
    return methods, lambda lam: DenseUser(d, damping=lam).gradient()


# ------------------------------------------------------------------- Hessian routes, measured


def hessian_routes(ns: tuple[int, ...] = (2, 8, 32, 128), batch: int = 1000, repeats: int = 3,
                   w1_batch: int = 20000, log=print) -> list[dict[str, Any]]:
    """Seconds per ``value_gradient_hessian`` by the reverse route and the ``torch.func`` route
    (best of ``repeats``): ridge-logistic at each ``n`` (``batch`` problems) and W1 (``n = 2``,
    ``w1_batch`` problems). The crossover ``derivatives.FUNC_MIN_N`` is set from these."""
    import time

    from wibergian import derivatives as der

    from .workloads import make_w1

    def best(route: str, energy, y, ps) -> float:
        old = der.HESSIAN_ROUTE["route"]
        der.HESSIAN_ROUTE["route"] = route
        try:
            der.value_gradient_hessian(energy, y, ps)
            ts = []
            for _ in range(repeats):
                t = time.perf_counter()
                der.value_gradient_hessian(energy, y, ps)
                ts.append(time.perf_counter() - t)
        finally:
            der.HESSIAN_ROUTE["route"] = old
        return min(ts)

    cases = []
    w1 = make_w1(w1_batch)
    cases.append(("W1", 2, w1_energy, torch.stack([w1.a[:, 0], w1.c[:, 0]], -1),
                  (w1.a, w1.c, w1.m, w1.s0, w1.s1)))
    for n in ns:
        d = DenseData(batch, n)
        cases.append(("ridge-logistic", n, logistic_energy, 0.1 * d.y_true,
                      (d.x, d.t, d.log_lam, d.mu)))
    rows = []
    for name, n, energy, y, ps in cases:
        r = {"energy": name, "n": n, "batch": y.shape[0], "reverse_s": best("reverse", energy,
                                                                            y, ps),
             "func_s": best("func", energy, y, ps)}
        rows.append(r)
        log(f"[hessian routes] {name} n={n} B={y.shape[0]}: reverse {r['reverse_s']:.4f} s, "
            f"torch.func {r['func_s']:.4f} s")
    return rows


def logistic_value_gradient_hessian(y: Tensor, x: Tensor, t: Tensor, log_lam: Tensor,
                                    mu: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The ridge-logistic ``(E, ∇E, ∇²E)`` written by hand (eager): ``σ = sigmoid(X y)``,
    ``∇E = Xᵀ(σ - t) + λ(y - μ)``, ``∇²E = Xᵀ diag(σ(1-σ)) X + λI``; the ideal the traced
    graphs are compared with."""
    z = (x @ y.unsqueeze(-1)).squeeze(-1)
    s = torch.sigmoid(z)
    lam = log_lam.exp()
    e = (torch.nn.functional.softplus(z) - t * z).sum(-1) + 0.5 * lam * ((y - mu) ** 2).sum(-1)
    g = (x.mT @ (s - t).unsqueeze(-1)).squeeze(-1) + lam * (y - mu)
    h = x.mT @ ((s * (1 - s)).unsqueeze(-1) * x)
    h.diagonal(dim1=1, dim2=2).add_(lam)
    return e, g, h


def compiled_hessian_routes(ns: tuple[int, ...] = (2, 4, 8, 16, 32, 128), batch: int = 1000,
                            repeats: int = 9, w1_batch: int = 20000,
                            log=print) -> list[dict[str, Any]]:
    """Seconds per ``value_gradient_hessian`` (median and, ``*_min_s``, minimum of ``repeats``
    rounds; each round runs every variant once, interleaved; 3 rounds from ``n = 128``) of the
    ridge-logistic energy (``batch`` problems) at each ``n``, and of W1 (``n = 2``, ``w1_batch``
    problems, compiled in blocks of ``compiled.MAX_ROWS`` rows as ``argmin`` runs it):

    - ``eager_reverse_s``: the eager default; ``hand_written_s``: the closed form (logistic);
    - ``compile=True`` (Inductor, ``CompiledEnergy``) tracing the reverse route
      (``compiled_reverse_s``), the ``torch.func`` route folded (``compiled_func_folded_s``,
      ``fold.py``) and folded then simplified (``compiled_func_simplified_s``, ``simplify.py``:
      what ships from ``compiled.FUNC_MIN_N`` up);
    - the same two traced ``torch.func`` graphs run eagerly (``traced_func_*_eager_s``).

    ``compiled.FUNC_MIN_N`` is set from these (same process, same data)."""
    import statistics
    import time

    from wibergian import compiled as comp
    from wibergian import derivatives as der

    from .workloads import make_w1

    cases: list[tuple[str, int, Any, Tensor, tuple[Tensor, ...]]] = []
    for n in ns:
        d = DenseData(batch, n)
        cases.append(("ridge-logistic", n, logistic_energy, 0.1 * d.y_true,
                      (d.x, d.t, d.log_lam, d.mu)))
    w1 = make_w1(w1_batch)
    cases.append(("W1", 2, w1_energy, torch.stack([w1.a[:, 0], w1.c[:, 0]], -1),
                  (w1.a, w1.c, w1.m, w1.s0, w1.s1)))
    rows = []
    old = (comp.FUNC_MIN_N, comp.SIMPLIFY_GRAPH)
    try:
        for name, n, energy, y, ps in cases:
            r: dict[str, Any] = {"energy": name, "n": n, "batch": y.shape[0]}
            fns: dict[str, Any] = {
                "eager_reverse_s": lambda yy, *pp, e=energy: der.value_gradient_hessian(e, yy,
                                                                                        pp)}
            if name == "ridge-logistic":
                fns["hand_written_s"] = logistic_value_gradient_hessian
            with torch.no_grad():
                for key, min_n, simplify in (("compiled_reverse_s", None, True),
                                             ("compiled_func_folded_s", 1, False),
                                             ("compiled_func_simplified_s", 1, True)):
                    comp.FUNC_MIN_N, comp.SIMPLIFY_GRAPH = min_n, simplify
                    ce = comp.CompiledEnergy(lambda yy, *pp, e=energy: e(yy, *pp))
                    t = time.perf_counter()
                    ce.value_gradient_hessian(y, *ps)  # compiles (per block size)
                    r[key[:-2] + "_first_call_s"] = time.perf_counter() - t
                    if ce.error is not None:
                        log(f"[compiled routes] {name} n={n} {key}: fell back ({ce.error})")
                        continue
                    fns[key] = ce.value_gradient_hessian
                    if min_n is not None and y.shape[0] <= comp.MAX_ROWS:  # one block
                        fns["traced_" + key[len("compiled_"):-2] + "_eager_s"] = (
                            ce._trace(ce._vgh_func, y, list(ps)))
                reps = 3 if n >= 128 else repeats
                times: dict[str, list[float]] = {k: [] for k in fns}
                for f in fns.values():
                    f(y, *ps)  # warm
                for _ in range(reps):
                    for k, f in fns.items():
                        t = time.perf_counter()
                        f(y, *ps)
                        times[k].append(time.perf_counter() - t)
            r.update({k: statistics.median(v) for k, v in times.items()})
            r.update({k[:-2] + "_min_s": min(v) for k, v in times.items()})
            rows.append(r)
            shown = ", ".join(f"{k[:-2]} {v:.4f}" for k, v in r.items() if k.endswith("_s")
                              and "first_call" not in k and "_min" not in k)
            log(f"[compiled routes] {name} n={n} B={y.shape[0]}: {shown} s "
                f"(load {os.getloadavg()[0]:.1f})")
    finally:
        comp.FUNC_MIN_N, comp.SIMPLIFY_GRAPH = old
    return rows


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(
        description="Seconds per value-gradient-Hessian of the ridge-logistic energy (and W1) "
                    "by each route, eager and compile=True (hessian_routes, "
                    "compiled_hessian_routes); prints the JSON. The D rows of the whole "
                    "argmin call: `wibergian bench --workload D`.")
    ap.add_argument("out", nargs="?", help="also write the JSON to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    out = {"load_before": load0, "eager_routes": hessian_routes(ns=(2, 8, 32)),
           "compiled_routes": compiled_hessian_routes(), "load_after": os.getloadavg()}
    print(json.dumps(out, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
