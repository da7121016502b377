"""Optional ``torch.compile`` kernels for the benchmark's no-gradient hot loops.

Eager PyTorch runs each elementwise operation as its own pass over memory: W1's start search
makes 6 passes over ``(B, K, K)``. ``torch.compile`` (Inductor, which needs a C++ compiler) fuses
them into one vectorised loop. Only code outside every gradient is compiled: W1's start search
(``w1_search.py``), shared by all PyTorch methods, and W1's energy where no graph is kept.

W1's value-gradient-Hessian is fused too, for the forward solves of the implicit methods (ours
and TorchOpt run the core's Newton under ``no_grad``); the unrolled baseline must keep its graph
and stays eager (``w1_fused_energy.py``).

Each kernel runs over blocks of a fixed number of rows (the last block padded) so that one
compilation serves every batch size. :data:`STATUS` records, per kernel, whether it ran compiled,
the seconds of its first call (compilation, reported apart like JAX's) and any compile error; a
failed compilation falls back to the eager function and never fails the run.
``configure(False)`` (``wibergian bench --no-compile``, or ``WIBERGIAN_BENCH_COMPILE=0``) turns
compilation off.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..compiled import pad_rows

STATUS: dict[str, dict[str, Any]] = {}
_settings = {"enabled": os.environ.get("WIBERGIAN_BENCH_COMPILE", "1") != "0"}
_compiled: dict[str, Callable[..., Any]] = {}


def configure(enabled: bool) -> None:
    """Turn compilation on or off for later calls (clears earlier state)."""
    _settings["enabled"] = bool(enabled)
    STATUS.clear()
    _compiled.clear()


def enabled() -> bool:
    return _settings["enabled"]


def run_blocked(name: str, fn: Callable[..., Any], rows: int, batched: tuple[Tensor, ...],
                shared: tuple[Tensor, ...] = ()) -> Any:
    """``fn(*batched_block, *shared)`` over blocks of ``rows`` problems, concatenated.

    ``batched`` tensors have the batch as their first dimension; ``fn`` returns a tensor or a
    tuple of tensors whose first dimension is the block's. Compiled when enabled and working,
    else eager (same blocks).
    """
    kernel = _kernel(name, fn)
    b = batched[0].shape[0]
    outs = []
    for lo in range(0, b, rows):
        hi = min(b, lo + rows)
        blk = [t[lo:hi] for t in batched]
        if kernel is not None and hi - lo < rows:  # pad: one static shape, one compilation
            blk = [pad_rows(t, rows) for t in blk]
        out = _call(name, kernel, fn, blk, shared)
        if isinstance(out, tuple):
            outs.append(tuple(o[: hi - lo] for o in out))
        else:
            outs.append(out[: hi - lo])
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(z) for z in zip(*outs, strict=True))
    return torch.cat(outs)


def run(name: str, fn: Callable[..., Any], *args: Tensor) -> Any:
    """``fn(*args)``, compiled when enabled and working, else eager."""
    return _call(name, _kernel(name, fn), fn, list(args), ())


def _kernel(name: str, fn: Callable[..., Any]) -> Callable[..., Any] | None:
    if not _settings["enabled"] or STATUS.get(name, {}).get("error"):
        STATUS.setdefault(name, {"backend": "eager", "first_call_s": None, "error": None})
        return None
    if name not in _compiled:
        _compiled[name] = torch.compile(fn, dynamic=False)
    return _compiled[name]


def _call(name: str, kernel: Callable[..., Any] | None, fn: Callable[..., Any],
          blk: list[Tensor], shared: tuple[Tensor, ...]) -> Any:
    if kernel is None:
        return fn(*blk, *shared)
    first = name not in STATUS
    t = time.perf_counter()
    try:
        out = kernel(*blk, *shared)
    except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back to eager
        STATUS[name] = {"backend": "eager", "first_call_s": None,
                        "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        _compiled.pop(name, None)
        return fn(*blk, *shared)
    if first:
        STATUS[name] = {"backend": "compiled", "first_call_s": time.perf_counter() - t,
                        "error": None}
    return out
