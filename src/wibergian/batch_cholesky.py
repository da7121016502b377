"""Cholesky factors and solves of many small matrices, vectorised across the batch (CPU).

LAPACK factors a batch one matrix at a time: at ``n = 32`` a ``(1000, 32, 32)`` float64 batch
takes ~3 ms in ``potrf`` (3.5 GFlop/s: a 32x32 matrix is too small for its blocked code) plus
the copy into its layout and ``tril`` afterwards. Here ``W`` matrices (8 in float64, 16 in
float32) are factored together, their lower triangles interleaved so that lane ``l`` of every
arithmetic operation is matrix ``l``: the inner loops run over the ``W`` lanes and the C++
compiler vectorises them. Row-by-row (Cholesky-Banachiewicz)::

    L[i, j] = (A[i, j] + σ δ_ij - Σ_{k<j} L[i, k] L[j, k]) / L[j, j]     (j < i)
    L[i, i] = sqrt(A[i, i] + σ - Σ_{k<i} L[i, k]²)

with ``1/L[j, j]`` computed once per column (as LAPACK's ``potf2`` scales by it). A pivot that
is not positive and finite marks the matrix as failed (``ok`` false; its factor is then
meaningless, as LAPACK's is). :func:`solve` applies ``(L Lᵀ)^-1`` to one vector per matrix the
same way (forward, then backward substitution, ``W`` matrices per pass).

The kernels are C++ built by Inductor's C++ toolchain, the one ``compile=True`` and
``compile="auto"`` (once it switches) use, and they serve the calls whose energy is compiled:
``argmin`` runs its solve and final step, and the backward its solve, inside :func:`active`
with its compiled energy (on while that energy runs compiled; one whose compilation failed runs
eagerly and factors with LAPACK, exactly as an eager call). So the route is a property of the
call, not of the process (a run resumed in a fresh process factors exactly as the uninterrupted
one did), and an eager-only process never pays the toolchain's ~3 s import. Building takes
~10 s the first time on a machine (Inductor's on-disk cache), well under a second after. Where
a kernel cannot be built (no compiler) :data:`FALLBACKS` counts it and LAPACK serves that dtype
for the rest of the process; other devices and dtypes, ``n`` outside ``[MIN_N, MAX_N]`` and
tensors that require grad go to LAPACK too. The factors equal LAPACK's up to rounding
(summation order; ``tests/core/test_batch_cholesky.py`` checks 1e-13 relative in float64).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

#: largest ``n`` routed here (the dense Newton's range, ``solver="auto"`` for n ≤ 40)
MAX_N = 40
#: smallest ``n`` (``n ≤ 2`` has closed forms in ``cholesky.py``)
MIN_N = 3
#: ``False`` routes everything to LAPACK (by hand, to measure: ``benchmarks/batched_cholesky.py``)
ENABLED = True
_ACTIVE: contextvars.ContextVar[Any] = contextvars.ContextVar("batch_cholesky", default=False)
#: kernels that could not be built (each then leaves its dtype to LAPACK for the process)
FALLBACKS = {"count": 0}

_LANES = {torch.float64: 8, torch.float32: 16}
_CTYPE = {torch.float64: "double", torch.float32: "float"}
_kernels: dict[tuple[str, torch.dtype], Any] = {}
_lock = threading.Lock()

_COMMON = r"""
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>
// W lanes (matrices) of T in one vector: the compiler maps it to the machine's SIMD registers
typedef T V __attribute__((vector_size(W * sizeof(T))));
// lower triangle of W matrices, lanes innermost: element (i, j) of lane l at tri(i, j) * W + l
static inline int64_t tri(int64_t i, int64_t j) { return i * (i + 1) / 2 + j; }
"""

_FACTOR = r"""
extern "C" void kernel(const T* h, const T* shift, T* out, bool* ok, int64_t B, int64_t n,
                       int64_t sstride, int64_t ob, int64_t orow, int64_t ocol) {
    std::vector<V> buf(tri(n, 0)), invbuf(n);
    V* a = buf.data();
    V* inv = invbuf.data();
    T* af = reinterpret_cast<T*>(a);
    const T inf = std::numeric_limits<T>::infinity();
    const T tiny = std::numeric_limits<T>::min();
    for (int64_t b0 = 0; b0 < B; b0 += W) {
        const int64_t cnt = (B - b0 < W) ? (B - b0) : W;
        for (int64_t l = 0; l < W; ++l) {  // lanes past the batch: identity matrices
            const T* hb = h + (b0 + (l < cnt ? l : 0)) * n * n;
            for (int64_t i = 0; i < n; ++i)
                for (int64_t j = 0; j <= i; ++j)
                    af[tri(i, j) * W + l] = (l < cnt) ? hb[i * n + j] : T(i == j);
            if (l < cnt)
                for (int64_t i = 0; i < n; ++i) af[tri(i, i) * W + l] += shift[(b0 + l) * sstride];
        }
        bool good[W];
        for (int l = 0; l < W; ++l) good[l] = true;
        for (int64_t i = 0; i < n; ++i) {
            V* ri = a + tri(i, 0);
            for (int64_t j = 0; j <= i; ++j) {
                const V* rj = a + tri(j, 0);
                V s = ri[j];
                for (int64_t k = 0; k < j; ++k) s -= ri[k] * rj[k];
                if (i == j) {  // the pivot: positive and finite, else the matrix failed
                    V d;
                    for (int l = 0; l < W; ++l) {
                        good[l] = good[l] && (s[l] > T(0)) && (s[l] < inf);
                        d[l] = std::sqrt(s[l] > tiny ? s[l] : tiny);
                    }
                    ri[i] = d;
                    inv[i] = T(1) / d;
                } else {
                    ri[j] = s * inv[j];
                }
            }
        }
        for (int64_t l = 0; l < cnt; ++l) {
            T* o = out + (b0 + l) * ob;
            for (int64_t i = 0; i < n; ++i)
                for (int64_t j = 0; j < n; ++j)
                    o[i * orow + j * ocol] = (j <= i) ? af[tri(i, j) * W + l] : T(0);
            ok[b0 + l] = good[l];
        }
    }
}
"""

_SOLVE = r"""
extern "C" void kernel(const T* chol, const T* g, T* x, int64_t B, int64_t n, int64_t cb,
                       int64_t crow, int64_t ccol) {
    std::vector<V> buf(tri(n, 0)), zbuf(n), invbuf(n);
    V* a = buf.data();
    V* z = zbuf.data();
    V* inv = invbuf.data();
    T* af = reinterpret_cast<T*>(a);
    T* zf = reinterpret_cast<T*>(z);
    for (int64_t b0 = 0; b0 < B; b0 += W) {
        const int64_t cnt = (B - b0 < W) ? (B - b0) : W;
        for (int64_t l = 0; l < W; ++l) {
            const T* cl = chol + (b0 + (l < cnt ? l : 0)) * cb;
            const T* gl = g + (b0 + (l < cnt ? l : 0)) * n;
            for (int64_t i = 0; i < n; ++i) {
                for (int64_t j = 0; j <= i; ++j)
                    af[tri(i, j) * W + l] = (l < cnt) ? cl[i * crow + j * ccol] : T(i == j);
                zf[i * W + l] = (l < cnt) ? gl[i] : T(0);
            }
        }
        for (int64_t i = 0; i < n; ++i) inv[i] = T(1) / a[tri(i, i)];
        for (int64_t i = 0; i < n; ++i) {  // L z = g
            V s = z[i];
            for (int64_t k = 0; k < i; ++k) s -= a[tri(i, k)] * z[k];
            z[i] = s * inv[i];
        }
        for (int64_t i = n - 1; i >= 0; --i) {  // Lᵀ x = z
            V s = z[i];
            for (int64_t k = i + 1; k < n; ++k) s -= a[tri(k, i)] * z[k];
            z[i] = s * inv[i];
        }
        for (int64_t l = 0; l < cnt; ++l)
            for (int64_t i = 0; i < n; ++i) x[(b0 + l) * n + i] = zf[i * W + l];
    }
}
"""


def _build(kind: str, dtype: torch.dtype) -> Any:
    from torch._inductor.codecache import CppPythonBindingsCodeCache

    t = _CTYPE[dtype]
    head = f"typedef {t} T;\nstatic constexpr int W = {_LANES[dtype]};\n{_COMMON}"
    if kind == "factor":
        types = [f"const {t}*", f"const {t}*", f"{t}*", "bool*", *["int64_t"] * 6]
        return CppPythonBindingsCodeCache.load_pybinding(types, head + _FACTOR)
    types = [f"const {t}*", f"const {t}*", f"{t}*", *["int64_t"] * 5]
    return CppPythonBindingsCodeCache.load_pybinding(types, head + _SOLVE)


def _kernel(kind: str, dtype: torch.dtype) -> Any:
    key = (kind, dtype)
    k = _kernels.get(key)
    if k is None:
        with _lock:
            k = _kernels.get(key)
            if k is None:
                try:
                    k = _build(kind, dtype)
                except Exception:  # noqa: BLE001 - no compiler/toolchain: LAPACK instead
                    FALLBACKS["count"] += 1
                    k = False
                _kernels[key] = k
    return k or None


@contextlib.contextmanager
def active(on: Any) -> Iterator[None]:
    """The factorisations inside use these kernels or LAPACK (``cholesky.py``). ``on``: a bool,
    or a ``CompiledEnergy`` (``None``: off): on while its compiled kernels run (``error is
    None``), so an energy whose compilation failed and that runs eagerly factors with LAPACK,
    exactly as an eager call does."""
    token = _ACTIVE.set(on)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _on() -> bool:
    v = _ACTIVE.get()
    if isinstance(v, bool) or v is None:
        return bool(v)
    return getattr(v, "error", None) is None


def _dense_matrices(t: Tensor) -> bool:
    """Whether the ``(B, n, n)`` tensor ``t`` is row- or column-major per matrix with the
    matrices one after another (what the kernels index by strides; also keeps a write from
    touching an element twice)."""
    n = t.shape[-1]
    bs, rs, cs = t.stride()
    return (bs == n * n or t.shape[0] <= 1) and {rs, cs} == {1, n}


def applies(t: Tensor) -> bool:
    """Whether a ``(B, n, n)`` batch (or its factor) goes through these kernels: inside
    ``active(True)``, a plain CPU tensor with memory (no subclass such as a fake tensor, no
    ``torch.func`` wrapper: the kernels read the data pointer), float32/float64,
    ``MIN_N ≤ n ≤ MAX_N``, no autograd."""
    return (ENABLED and type(t) is Tensor and t.device.type == "cpu" and t.dtype in _LANES
            and MIN_N <= t.shape[-1] <= MAX_N and not t.requires_grad
            and not torch._C._functorch.is_functorch_wrapped_tensor(t) and _on())


def factor(h: Tensor, shift: Tensor | float, out: Tensor | None = None
           ) -> tuple[Tensor, Tensor] | None:
    """``(L, ok)`` for ``H + diag(shift)`` (``h`` ``(B, n, n)``, lower triangle read; ``shift``
    ``(B,)`` or a number), ``L`` lower-triangular (zeros above), written into ``out`` (a
    ``(B, n, n)`` buffer whose matrices do not overlap, in its own layout: LAPACK's
    column-major ``work_buffer`` or row-major) when given, else into a new row-major tensor.
    ``None`` when the kernel is not available."""
    k = _kernel("factor", h.dtype)
    if k is None:
        return None
    b, n = h.shape[0], h.shape[-1]
    h = h.contiguous()  # read row-major: its lower triangle is H's
    if isinstance(shift, Tensor):
        s = shift.to(h.dtype).contiguous()
        stride = 1 if s.dim() >= 1 and s.numel() == b else 0
        s = s.reshape(-1)[:1] if stride == 0 else s
    else:
        s, stride = torch.full((1,), float(shift), dtype=h.dtype), 0
    fits = (out is not None and out.dtype == h.dtype and out.device == h.device
            and tuple(out.shape) == (b, n, n) and _dense_matrices(out))
    lo = out if fits else torch.empty(b, n, n, dtype=h.dtype)
    ok = torch.empty(b, dtype=torch.bool)
    if b:
        k(h, s, lo, ok, b, n, stride, *lo.stride())
    return lo, ok


def solve(chol: Tensor, g: Tensor) -> Tensor | None:
    """``(L Lᵀ)^-1 g`` for lower-triangular ``chol`` ``(B, n, n)`` (any strides; its lower
    triangle read) and ``g`` ``(B, n)``; ``None`` when the kernel is not available."""
    k = _kernel("solve", chol.dtype)
    if k is None:
        return None
    b, n = chol.shape[0], chol.shape[-1]
    if not _dense_matrices(chol):
        chol = chol.contiguous()
    g = g.to(chol.dtype).contiguous()
    x = torch.empty(b, n, dtype=chol.dtype)
    if b:
        k(chol, g, x, b, n, *chol.stride())
    return x
