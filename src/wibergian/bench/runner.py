"""Check gradients, then time methods interleaved until the medians are stable.

Protocol for one workload:

1. Every method runs once (``prepare``: JAX compiles here; its seconds are kept as
   ``first_call_s``).
2. Gradient agreement: every method's gradient is compared with ours at the damping that
   method computes (``info.ref_damping``); the relative error must be within
   ``info.tolerance`` (see ``common.py``) or :class:`GradientMismatch` is raised and nothing is
   timed. (W3 passes an ``agreement`` checked beforehand on a converged small instance.)
3. Rounds: in each round every method runs one training step (forward, then backward), the
   order rotating from round to round so that no method always follows the same neighbour.
   After ``min_repeats`` rounds the run stops as soon as, for every method, the median total of
   the last ``min_repeats`` rounds is within ``stable_rel`` of the median over all rounds (or
   at ``max_repeats`` rounds, or when ``budget_s`` is spent; the JSON says which). With
   ``min_seconds``, a workload whose first round takes ``t`` seconds runs at least
   ``ceil(min_seconds / t)`` rounds (at most :data:`MAX_ROUNDS`; ``max_repeats`` is raised to
   match): a cell of a few milliseconds per call is not judged on five samples.
4. Memory: one extra, untimed step per method with the small mmap threshold (see
   ``machine.py``); its peaks are reported.
5. Reported per method: medians (and quartiles) of forward, backward and total seconds, peak
   memory (``machine.py``), ratios to the reference method, the agreement error, and the load
   average before and after.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import machine
from .common import BenchMethod, check_agreement

#: most rounds ``min_seconds`` can ask for
MAX_ROUNDS = 60


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def _quartiles(xs: Sequence[float]) -> tuple[float, float]:
    q = np.percentile(np.asarray(xs, dtype=float), [25, 75])
    return float(q[0]), float(q[1])


def measure_step(method: BenchMethod, trim: bool = False) -> dict[str, float | None]:
    """One forward + backward with times (s) and peak memory above the pre-step RSS (MiB);
    ``trim`` first hands freed heap pages back to the OS (for the memory pass)."""
    gc.collect()
    if trim:
        machine.trim()
    base = machine.rss_mib()
    ok = machine.reset_peak()
    t0 = time.perf_counter()
    ctx = method.forward()
    t1 = time.perf_counter()
    fwd_peak = machine.peak_mib() if ok else None
    if trim:  # what the forward keeps alive, without pages freed but not yet returned
        gc.collect()
        machine.trim()
    after_fwd = machine.rss_mib()
    machine.reset_peak()
    t2 = time.perf_counter()
    method.backward(ctx)
    t3 = time.perf_counter()
    bwd_peak = machine.peak_mib() if ok else None
    del ctx

    def above(x: float | None, ref: float | None) -> float | None:
        return None if x is None or ref is None else max(0.0, x - ref)

    return {
        "forward_s": t1 - t0,
        "backward_s": t3 - t2,
        "total_s": (t1 - t0) + (t3 - t2),
        "forward_peak_mib": above(fwd_peak, base),
        "retained_after_forward_mib": above(after_fwd, base),
        "backward_peak_mib": above(bwd_peak, base),
        "backward_extra_mib": above(bwd_peak, after_fwd),
    }


def check_gradients(
    methods: Sequence[BenchMethod], reference: Callable[[float], dict[str, np.ndarray]]
) -> dict[str, float]:
    """Relative gradient error of every method against ``reference(λ)`` (ours at damping λ).

    Raises:
        GradientMismatch: when any method exceeds its tolerance.
    """
    refs: dict[float, dict[str, np.ndarray]] = {}
    errors = {}
    for m in methods:
        lam = m.info.ref_damping
        if lam not in refs:
            refs[lam] = reference(lam)
        errors[m.info.name] = check_agreement(m.info.name, m.gradient(), refs[lam],
                                              m.info.tolerance)
    return errors


def run_workload(
    label: str,
    methods: Sequence[BenchMethod],
    reference: Callable[[float], dict[str, np.ndarray]] | None,
    *,
    agreement: dict[str, float] | None = None,
    primary: str = "ours",
    min_repeats: int = 5,
    max_repeats: int = 30,
    stable_rel: float = 0.05,
    budget_s: float = 300.0,
    min_seconds: float = 0.0,
    log: Callable[[str], None] = print,
    malloc: str = "tuned",
) -> dict[str, Any]:
    """Run the protocol above; returns a JSON-ready dict.

    ``malloc="default"`` leaves glibc's allocator as a user's process has it (no ``mallopt``)
    and skips the memory pass (which needs the small mmap threshold)."""
    if malloc == "tuned":
        machine.set_malloc_threshold(machine.TIMING_THRESHOLD)
    load_before = machine.load()
    first_call = {}
    for m in methods:
        t = m.prepare()
        first_call[m.info.name] = t if t > 0 else None
    if agreement is None:
        if reference is None:
            raise ValueError("run_workload needs a reference gradient or a finished agreement")
        log(f"[{label}] checking gradients of {len(methods)} methods")
        errors = check_gradients(methods, reference)
    else:  # checked beforehand on an instance where the check is meaningful (W3)
        errors = agreement
    for name, e in errors.items():
        log(f"[{label}]   {name:32s} relative gradient error {e:.2e}  ok")
    samples: dict[str, list[dict[str, float | None]]] = {m.info.name: [] for m in methods}
    start = time.perf_counter()
    stop_reason = "max_repeats"
    rounds = 0
    need, cap = min_repeats, max_repeats
    while rounds < cap:
        r = rounds
        order = list(methods[r % len(methods):]) + list(methods[: r % len(methods)])
        t_round = time.perf_counter()
        for m in order:
            samples[m.info.name].append(measure_step(m))
        rounds = r + 1
        if r == 0 and min_seconds > 0:  # cheap workloads: enough rounds for min_seconds
            per_round = max(time.perf_counter() - t_round, 1e-9)
            need = max(min_repeats, min(MAX_ROUNDS, math.ceil(min_seconds / per_round)))
            cap = max(cap, need)
        if rounds >= need and _stable(samples, min_repeats, stable_rel):
            stop_reason = "stable"
            break
        if time.perf_counter() - start > budget_s:
            stop_reason = "time_budget"
            break
    # Memory pass (untimed): with glibc's mmap threshold at 64 KiB every large buffer is
    # mapped and unmapped, so the high-water mark sees it; that slows eager allocation-heavy
    # code ~2x, which is why the timed rounds above run with the 32 MiB threshold instead.
    if malloc == "tuned":
        machine.set_malloc_threshold(machine.SMALL_THRESHOLD)
        try:
            for m in methods:
                measure_step(m, trim=True)  # settle
                mem = measure_step(m, trim=True)
                for s in samples[m.info.name]:
                    s.update({k: v for k, v in mem.items() if k.endswith("_mib")})
        finally:
            machine.set_malloc_threshold(machine.TIMING_THRESHOLD)
    else:  # no memory pass: the samples' peaks are under the default allocator, not reported
        for s in samples.values():
            for x in s:
                x.update({k: None for k in x if k.endswith("_mib")})
    load_after = machine.load()
    results = {}
    for m in methods:
        s = samples[m.info.name]
        row: dict[str, Any] = {
            "library": m.info.library,
            "gradient": m.info.gradient,
            "ref_damping": m.info.ref_damping,
            "agreement_rel_error": errors[m.info.name],
            "agreement_tolerance": m.info.tolerance,
            "stops_when_converged": m.info.stops_when_converged,
            "repeats": len(s),
        }
        for key in ("forward_s", "backward_s", "total_s"):
            vals = [float(x[key]) for x in s]  # type: ignore[arg-type]
            row[key] = _median(vals)
            row[key.replace("_s", "_iqr_s")] = _quartiles(vals)
        for key in ("forward_peak_mib", "retained_after_forward_mib", "backward_peak_mib",
                    "backward_extra_mib"):
            vals = [float(x[key]) for x in s if x[key] is not None]  # type: ignore[arg-type]
            row[key] = _median(vals) if vals else None
        fc = first_call[m.info.name]
        row["first_call_s"] = fc
        if getattr(m, "eager_calls", None) is not None:  # compile='auto': eager calls before
            row["eager_calls_before_compiling"] = m.eager_calls
        jit = getattr(m, "jit_compiled", False)
        row["compile_s"] = max(0.0, fc - row["total_s"]) if (jit and fc is not None) else None
        results[m.info.name] = row
    if primary in results:
        ref = results[primary]
        for row in results.values():
            for key in ("forward_s", "backward_s", "total_s"):
                row[key.replace("_s", "_ratio_to_ours")] = row[key] / ref[key]
    out = {
        "label": label,
        "rounds": rounds,
        "min_rounds": need,
        "stop_reason": stop_reason,
        "load_before": load_before,
        "load_after": load_after,
        "wall_s": time.perf_counter() - start,
        "primary": primary,
        "malloc": malloc,
        "methods": results,
    }
    for name, row in results.items():
        log(f"[{label}]   {name:32s} fwd {row['forward_s']:.4f}s bwd {row['backward_s']:.4f}s "
            f"total {row['total_s']:.4f}s  ({row['repeats']} repeats)")
    return out


def _stable(samples: dict[str, list[dict[str, float | None]]], last: int, rel: float) -> bool:
    for s in samples.values():
        tot = [float(x["total_s"]) for x in s]  # type: ignore[arg-type]
        whole, recent = _median(tot), _median(tot[-last:])
        if abs(recent - whole) > rel * whole:
            return False
    return True
