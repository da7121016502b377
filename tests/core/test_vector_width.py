"""The SIMD width of the library's compiled kernels (``vector_width.py``)."""

from __future__ import annotations

import pytest
import torch

from wibergian import compiled, vector_width
from wibergian.derivatives import value_gradient_hessian


class _ISA:
    def __init__(self, bits: int):
        self.bits = bits

    def bit_width(self) -> int:
        return self.bits

    def __bool__(self) -> bool:
        return True


@pytest.fixture
def isa(monkeypatch):
    """Set the machine's valid ISAs and Inductor's default pick (bit widths)."""
    from torch._inductor import cpu_vec_isa

    def set_(valid: list[int], default: int | None) -> None:
        monkeypatch.setattr(cpu_vec_isa, "valid_vec_isa_list", lambda: [_ISA(b) for b in valid])
        monkeypatch.setattr(cpu_vec_isa, "pick_vec_isa",
                            lambda: _ISA(default) if default else cpu_vec_isa.invalid_vec_isa)
        vector_width._choice.clear()

    yield set_
    vector_width._choice.clear()


CPU = torch.device("cpu")
X = torch.zeros(4, 3, 2, dtype=torch.float64)
V = torch.zeros(4, 2, dtype=torch.float64)


def test_auto_narrows_only_where_inductor_would_go_wider_and_avx2_is_valid(isa, monkeypatch):
    monkeypatch.setattr(vector_width, "SIMD_BITS", "auto")
    isa([512, 256], 512)
    assert vector_width.simd_bits(CPU) == 256
    assert vector_width.inductor_options(CPU, [X, V], 4) == {"cpp.simdlen": 256}
    isa([256], 256)  # AVX2-only x86: Inductor's default stands
    assert vector_width.simd_bits(CPU) is None
    assert vector_width.inductor_options(CPU, [X], 4) == {}
    isa([512], 512)  # no 256-bit ISA to narrow to
    assert vector_width.simd_bits(CPU) is None
    isa([128], 128)  # e.g. ARM NEON
    assert vector_width.inductor_options(CPU, [X], 4) == {}
    isa([], None)  # no vector ISA at all
    assert vector_width.simd_bits(CPU) is None


def test_auto_applies_to_energies_over_batched_matrices_only(isa, monkeypatch):
    monkeypatch.setattr(vector_width, "SIMD_BITS", "auto")
    isa([512, 256], 512)
    assert vector_width.inductor_options(CPU, [V, torch.zeros(3)], 4) == {}  # elementwise (W1)
    assert vector_width.inductor_options(CPU, [torch.zeros(4, 3, 2, dtype=torch.long)], 4) == {}
    assert vector_width.inductor_options(CPU, [torch.zeros(4, 3, 2)], 4) == {}  # float32: mixed
    assert vector_width.inductor_options(CPU, [V, X], 4) == {"cpp.simdlen": 256}
    filters = torch.zeros(6, 1, 3, 3, dtype=torch.float64)  # shared, not one per problem
    assert vector_width.inductor_options(CPU, [V, filters], 4) == {}
    assert vector_width.inductor_options(torch.device("meta"), [X], 4) == {}  # not a CPU kernel


def test_an_explicit_width_or_none_overrides(isa, monkeypatch):
    isa([512, 256], 512)
    monkeypatch.setattr(vector_width, "SIMD_BITS", None)
    assert vector_width.inductor_options(CPU, [X], 4) == {}
    monkeypatch.setattr(vector_width, "SIMD_BITS", 512)
    assert vector_width.inductor_options(CPU, [V], 4) == {"cpp.simdlen": 512}
    monkeypatch.setattr(vector_width, "SIMD_BITS", "wide")
    with pytest.raises(ValueError, match="SIMD_BITS"):
        vector_width.simd_bits(CPU)


def _logistic(y, x, t, log_lam):
    z = (x @ y.unsqueeze(-1)).squeeze(-1)
    return (torch.nn.functional.softplus(z) - t * z).sum(-1) + 0.5 * log_lam.exp() * (y * y).sum(-1)


@pytest.mark.slow
def test_the_kernels_are_compiled_with_the_chosen_width_and_agree_with_eager(monkeypatch):
    """The options reach ``torch.compile`` for every kernel the wrapper builds, and the kernel
    built at the narrower width gives the eager value, gradient and Hessian."""
    seen: list[dict] = []
    real = torch.compile

    def recording(fn, **kw):
        seen.append(dict(kw.get("options") or {}))
        return real(fn, **kw)

    monkeypatch.setattr(torch, "compile", recording)
    monkeypatch.setattr(vector_width, "SIMD_BITS", 256)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 12, 8, generator=gen, dtype=torch.float64)
    t = (torch.rand(16, 12, generator=gen, dtype=torch.float64) < 0.5).double()
    lam = torch.tensor(0.3, dtype=torch.float64)
    y = 0.3 * torch.randn(16, 8, generator=gen, dtype=torch.float64)
    ce = compiled.CompiledEnergy(_logistic)
    got = ce.value_gradient_hessian(y, x, t, lam)
    assert ce.error is None
    want = value_gradient_hessian(_logistic, y, (x, t, lam))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert seen and all(o == {"cpp.simdlen": 256} for o in seen)
