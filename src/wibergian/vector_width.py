"""The SIMD width Inductor's C++ code generator uses for the library's compiled kernels.

On a CPU with AVX-512, Inductor vectorises with 512-bit registers (``VectorizedN<double, 2>``:
16 float64 lanes per tile). The kernels ``compiled.py`` builds from a dense energy are dominated
by reductions over short axes and by loads gathered across the batch (``X[b, m, k]`` for 16
problems ``b`` at a time); at the wider tile each such gather copies twice as many scalars per
vector and the tiles spill registers. Restricting the kernels to AVX2 (``cpp.simdlen = 256``,
8-lane tiles) measured faster on every dense kernel here (``python benchmarks/simd_width.py``,
docs/method.md "Vector width"): the compiled value-gradient-Hessian of the dense
ridge-logistic energy at ``B = 1000``, float64, one thread.

The choice applies to the library's own kernels only (``torch.compile(..., options=...)``; a
user's other ``torch.compile`` calls keep Inductor's default), is part of Inductor's cache key,
and is made only where Inductor's own choice is wider than 256 bits and AVX2 is valid on the
machine (elsewhere, e.g. AVX2-only x86 or ARM, Inductor's default stands), and only for the
kernels of an energy over batched float64 matrices (a parameter of three or more dimensions,
one matrix per problem):
an elementwise energy's kernels measured slower at 256 bits, float32 ones mixed.
:data:`SIMD_BITS` overrides it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

#: ``"auto"``: 256-bit vectors where Inductor would pick wider ones and AVX2 is valid (see the
#: module doc); ``None``: Inductor's default; an ``int``: that width in bits (must be one of the
#: machine's valid ISAs, else Inductor does not vectorise: only to measure, simd_width.py)
SIMD_BITS: int | str | None = "auto"
_NARROW = 256
_choice: dict[str, int | None] = {}


def _auto_bits() -> int | None:
    """256 where Inductor's default ISA is wider and a 256-bit ISA is valid, else ``None``."""
    if "auto" not in _choice:
        bits = None
        try:
            from torch._inductor import cpu_vec_isa

            widths = {isa.bit_width() for isa in cpu_vec_isa.valid_vec_isa_list()}
            default = cpu_vec_isa.pick_vec_isa()
            if _NARROW in widths and default and default.bit_width() > _NARROW:
                bits = _NARROW
        except Exception:  # noqa: BLE001 - an Inductor without these helpers: its default
            bits = None
        _choice["auto"] = bits
    return _choice["auto"]


def simd_bits(device: torch.device) -> int | None:
    """The vector width (bits) the library's kernels on ``device`` are compiled with, or
    ``None`` for Inductor's own choice (non-CPU devices always)."""
    if device.type != "cpu" or SIMD_BITS is None:
        return None
    if SIMD_BITS == "auto":
        return _auto_bits()
    if not isinstance(SIMD_BITS, int) or SIMD_BITS <= 0:
        raise ValueError(f"vector_width.SIMD_BITS must be 'auto', None or bits > 0; got "
                         f"{SIMD_BITS!r}")
    return SIMD_BITS


def batched_matrices(params: Sequence[Tensor], rows: int) -> bool:
    """Whether an energy's parameters include a batch of float64 matrices: a tensor of three or
    more dimensions whose first is the ``rows`` problems (``X`` ``(B, M, n)``), whose kernels
    gather across the batch. A shared tensor (a convolution's filters ``(J, 1, k, k)``) is not
    one."""
    return any(t.dtype == torch.float64 and t.dim() >= 3 and t.shape[0] == rows
               for t in params)


def inductor_options(device: torch.device, params: Sequence[Tensor] = (), rows: int = -1
                     ) -> dict[str, Any]:
    """``torch.compile(options=...)`` for a library kernel on ``device`` over ``rows``
    problems of an energy with parameters ``params``.

    With ``SIMD_BITS = "auto"`` the narrower width applies to energies over batched float64
    matrices only (:func:`batched_matrices`): an elementwise energy's kernels (W1's: 2-D
    parameters, its multi-start candidates ``(B, C, n)``) measured 5-9 % slower at 256 bits,
    and float32 (16 lanes at 512 bits) was mixed (whole call 0.97 at n = 8, 1.08 at n = 32;
    ``benchmarks/simd_width.py``): those keep Inductor's choice.
    """
    bits = simd_bits(device)
    if bits is None or (SIMD_BITS == "auto" and not batched_matrices(params, rows)):
        return {}
    return {"cpp.simdlen": bits}
