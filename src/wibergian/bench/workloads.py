"""The three benchmark workloads, defined once and shared by every method (torch and JAX).

All data here is **generated** (seeded) except W3's clean image, which is a real photograph
bundled with scikit-image; its noise is generated.

W1, fusion-like (``n = 2``): problem ``b`` has ``K = 72`` candidate points ``(a_bk, c_bk)``
around a ground truth ``g_b`` and the energy

    E_b(y) = -Σ_k m_k exp(-(y_0 - a_bk)²/s0_k² - (y_1 - c_bk)²/s1_k²)

with learnable ``m, s0, s1`` (shape ``(K,)``, initial 1, 10, 10). Candidates ``k < 43`` (60 %)
are inliers ``g_b + N(0, 3²)``; the other 29 are outliers uniform in ``[-60, 60]²`` (absolute
coordinates). ``g_b`` is uniform in ``[-20, 20]²``. Forward: start at the candidate of lowest
energy (an ``O(B·K²)`` search, chunked), then 20 damped Newton iterations. Loss: mean over
problems of ``||y*_b - g_b||_1``.

W2, pose-like (``n = 40``): problem ``b`` has per-row confidences ``w_b ∈ [0.1, 1]^68`` and
observations ``x_b ∈ R^68``; with learnable ``A`` (68×40) and ``σ`` (40,)

    E_b(y) = Σ_i w_bi (A_i·y - x_bi)² + Σ_j (σ_j y_j)²,

i.e. 68 weighted data rows plus the prior rows ``σ·y``. The minimiser solves
``(Aᵀ W_b A + diag σ²) y = Aᵀ W_b x_b``: one 40×40 factorisation per problem. Loss: mean
squared error to the known ``y_b``.

W3, large (``n = H·W``): field-of-experts-like denoising of a real image ``z`` (noisy)

    E(x) = ½ ||x - z||² + Σ_j α_j Σ_p log(1 + (f_j ⋆ x)_p² / s_j²),

with learnable filters ``f`` (J, 1, k, k), weights ``α`` (J,) and scales ``s`` (J,). Loss: mean
squared error to the clean image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import fused, w1_fused_energy
from .w1_search import best_index

K_WELLS = 72
N_INLIERS = 43  # 60 % of 72, rounded
W2_ROWS = 68
W2_DIM = 40


# --------------------------------------------------------------------------------------------
# W1


@dataclass
class W1Data:
    """A generated W1 instance.

    Attributes:
        a, c: candidate coordinates, each ``(B, K)``.
        g: ground truth ``(B, 2)``.
        m, s0, s1: initial learnable parameters, each ``(K,)`` (1, 10, 10).
    """

    a: Tensor
    c: Tensor
    g: Tensor
    m: Tensor
    s0: Tensor
    s1: Tensor

    @property
    def batch(self) -> int:
        return int(self.a.shape[0])

    def numpy(self) -> dict[str, np.ndarray]:
        """The same instance as numpy arrays (for the JAX methods)."""
        keys = ("a", "c", "g", "m", "s0", "s1")
        return {k: getattr(self, k).detach().cpu().numpy() for k in keys}


def make_w1(batch: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> W1Data:
    """Generate W1 with ``batch`` problems (seeded; one draw per call, so instances of different
    sizes are different draws)."""
    if batch < 1:
        raise ValueError(f"W1 batch must be >= 1, got {batch}")
    gen = torch.Generator().manual_seed(seed)
    g = (torch.rand(batch, 2, generator=gen, dtype=dtype) * 2 - 1) * 20.0
    inl = g.unsqueeze(1) + 3.0 * torch.randn(batch, N_INLIERS, 2, generator=gen, dtype=dtype)
    n_out = K_WELLS - N_INLIERS
    out = (torch.rand(batch, n_out, 2, generator=gen, dtype=dtype) * 2 - 1) * 60.0
    pts = torch.cat([inl, out], dim=1)
    ones = torch.ones(K_WELLS, dtype=dtype)
    return W1Data(
        a=pts[..., 0].contiguous(),
        c=pts[..., 1].contiguous(),
        g=g,
        m=ones.clone(),
        s0=10.0 * ones,
        s1=10.0 * ones,
    )


def w1_energy(y: Tensor, a: Tensor, c: Tensor, m: Tensor, s0: Tensor, s1: Tensor) -> Tensor:
    """W1 energy ``(B,)`` for ``y`` ``(B, 2)``, candidates ``a, c`` ``(B, K)``, params ``(K,)``."""
    u = (y[:, :1] - a) ** 2 / s0**2 + (y[:, 1:] - c) ** 2 / s1**2
    return -(m * torch.exp(-u)).sum(-1)


class W1Energy:
    """W1 energy with closed-form gradient and Hessian (the core's ``Energy`` protocol).

    With ``w_k = m_k exp(-u_k)``, ``p_k = 2(y_0 - a_k)/s0_k²``, ``q_k = 2(y_1 - c_k)/s1_k²``:
    ``∇E = (Σ w_k p_k, Σ w_k q_k)`` and
    ``∇²E = Σ w_k [[2/s0_k² - p_k², -p_k q_k], [-p_k q_k, 2/s1_k² - q_k²]]``.

    Every evaluation runs over blocks of ``rows`` problems: the ``(rows, K)`` temporaries then
    stay in cache (one ``(20000, 72)`` float64 temporary is 11 MB, and eager PyTorch at that size
    is bound by memory traffic and page faults; blocks of 2048 rows measured ~10x faster here).
    ``value_gradient_hessian`` returns all three from one exponential per term.
    """

    def __init__(self, rows: int = 2048):
        self.rows = rows
        self._columns = w1_fused_energy.ColumnBlocks()

    def _blocks(self, fn, y: Tensor, a: Tensor, c: Tensor, *shared: Tensor):
        b, r = y.shape[0], self.rows
        if b <= r:
            return fn(y, a, c, *shared)
        outs = [fn(y[i : i + r], a[i : i + r], c[i : i + r], *shared) for i in range(0, b, r)]
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(z) for z in zip(*outs, strict=True))
        return torch.cat(outs)

    def __call__(
        self, y: Tensor, a: Tensor, c: Tensor, m: Tensor, s0: Tensor, s1: Tensor
    ) -> Tensor:
        return self._blocks(w1_energy, y, a, c, m, s0, s1)

    def gradient(
        self, y: Tensor, a: Tensor, c: Tensor, m: Tensor, s0: Tensor, s1: Tensor
    ) -> Tensor:
        return self._blocks(_w1_gradient, y, a, c, m, s0, s1)

    def hessian(
        self, y: Tensor, a: Tensor, c: Tensor, m: Tensor, s0: Tensor, s1: Tensor
    ) -> Tensor:
        return self._blocks(_w1_vgh, y, a, c, m, s0, s1)[2]

    def value_gradient_hessian(
        self, y: Tensor, a: Tensor, c: Tensor, m: Tensor, s0: Tensor, s1: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(E (B,), ∇E (B, 2), ∇²E (B, 2, 2))`` in one pass: one fused loop when nothing is
        tracked by autograd and ``torch.compile`` is on (``w1_fused_energy.py``)."""
        tracked = torch.is_grad_enabled() and any(
            t.requires_grad for t in (y, a, c, m, s0, s1))
        if fused.enabled() and not tracked and y.dtype == torch.float64:
            return w1_fused_energy.value_gradient_hessian(self._columns, y, a, c, m, s0, s1)
        return self._blocks(_w1_vgh, y, a, c, m, s0, s1)


def _w1_gradient(y: Tensor, a: Tensor, c: Tensor, m: Tensor, s0: Tensor, s1: Tensor) -> Tensor:
    """Differentiable closed-form gradient ``(B, 2)``."""
    i0, i1 = 1.0 / s0**2, 1.0 / s1**2
    d0, d1 = y[:, :1] - a, y[:, 1:] - c
    w = m * torch.exp(-(d0 * d0 * i0 + d1 * d1 * i1))
    return 2.0 * torch.stack([(w * d0 * i0).sum(-1), (w * d1 * i1).sum(-1)], dim=-1)


def _w1_vgh(
    y: Tensor, a: Tensor, c: Tensor, m: Tensor, s0: Tensor, s1: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Value, gradient and Hessian from one exponential per well, in few passes over ``(B, K)``:
    with ``t0 = (y_0 - a) i0``, ``t1 = (y_1 - c) i1`` (``i = 1/s²``) and ``w = m exp(-u)``,
    ``∇E = 2 (Σ w t0, Σ w t1)`` and ``∇²E = [[2 Σ w i0 - 4 Σ w t0², -4 Σ w t0 t1], [·, 2 Σ w i1 -
    4 Σ w t1²]]``; the ``Σ w i`` terms are matrix-vector products."""
    i0, i1 = 1.0 / s0**2, 1.0 / s1**2
    d0, d1 = y[:, :1] - a, y[:, 1:] - c
    t0, t1 = d0 * i0, d1 * i1
    u = torch.addcmul(d0 * t0, d1, t1)
    tracked = torch.is_grad_enabled() and any(t.requires_grad for t in (y, a, c, m, s0, s1))
    w = torch.exp(-u) * m if tracked else u.neg_().exp_().mul_(m)  # in place when untracked
    wt0, wt1 = w * t0, w * t1
    g = torch.stack([wt0.sum(-1), wt1.sum(-1)], -1) * 2.0
    h00 = 2.0 * (w @ i0) - 4.0 * torch.linalg.vecdot(wt0, t0)
    h11 = 2.0 * (w @ i1) - 4.0 * torch.linalg.vecdot(wt1, t1)
    h01 = -4.0 * torch.linalg.vecdot(wt0, t1)
    h = torch.stack([torch.stack([h00, h01], -1), torch.stack([h01, h11], -1)], -2)
    return -w.sum(-1), g, h


def w1_best_candidate(
    a: Tensor, c: Tensor, m: Tensor, s0: Tensor, s1: Tensor, chunk_bytes: int = 4 << 20
) -> Tensor:
    """The candidate of lowest energy per problem, ``(B, 2)``, without gradient.

    Evaluates every problem's energy at each of its ``K`` candidates (``B·K²`` exponentials):
    fused by ``torch.compile`` where available, else in float64 blocks of about
    ``chunk_bytes`` (see ``w1_search.py``).
    """
    idx = best_index(a, c, m, s0, s1, chunk_bytes)
    return torch.stack([a.gather(1, idx[:, None]), c.gather(1, idx[:, None])], -1)[:, 0].detach()


def w1_loss(y: Tensor, g: Tensor) -> Tensor:
    """Mean over problems of ``||y_b - g_b||_1``."""
    return (y - g).abs().sum(-1).mean()


# --------------------------------------------------------------------------------------------
# W2


@dataclass
class W2Data:
    """A generated W2 instance.

    Attributes:
        w: row confidences ``(B, 68)`` in ``[0.1, 1]``.
        x: observations ``(B, 68)``.
        y_true: the known solutions ``(B, 40)``.
        A: initial learnable matrix ``(68, 40)`` (the generating matrix, perturbed).
        sigma: initial learnable prior scales ``(40,)`` (0.1).
    """

    w: Tensor
    x: Tensor
    y_true: Tensor
    A: Tensor
    sigma: Tensor

    @property
    def batch(self) -> int:
        return int(self.w.shape[0])

    def numpy(self) -> dict[str, np.ndarray]:
        keys = ("w", "x", "y_true", "A", "sigma")
        return {k: getattr(self, k).detach().cpu().numpy() for k in keys}


def make_w2(batch: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> W2Data:
    """Generate W2: ``x_b = A_true y_b + 0.05 ε``; the learnable ``A`` starts at
    ``A_true + 0.1 N(0, 1)/√40``."""
    if batch < 1:
        raise ValueError(f"W2 batch must be >= 1, got {batch}")
    gen = torch.Generator().manual_seed(seed)
    a_true = torch.randn(W2_ROWS, W2_DIM, generator=gen, dtype=dtype) / W2_DIM**0.5
    y = torch.randn(batch, W2_DIM, generator=gen, dtype=dtype)
    x = y @ a_true.T + 0.05 * torch.randn(batch, W2_ROWS, generator=gen, dtype=dtype)
    w = 0.1 + 0.9 * torch.rand(batch, W2_ROWS, generator=gen, dtype=dtype)
    a0 = a_true + 0.1 * torch.randn(W2_ROWS, W2_DIM, generator=gen, dtype=dtype) / W2_DIM**0.5
    return W2Data(w=w, x=x, y_true=y, A=a0, sigma=torch.full((W2_DIM,), 0.1, dtype=dtype))


def w2_energy(y: Tensor, w: Tensor, x: Tensor, A: Tensor, sigma: Tensor) -> Tensor:
    """W2 energy ``(B,)`` for ``y`` ``(B, 40)``."""
    r = y @ A.T - x
    return (w * r * r).sum(-1) + ((sigma * y) ** 2).sum(-1)


class W2Energy:
    """W2 energy with closed forms: ``∇E = 2(Aᵀ W (A y - x) + σ² y)``,
    ``∇²E = 2(Aᵀ W A + diag σ²)``."""

    def __call__(self, y: Tensor, w: Tensor, x: Tensor, A: Tensor, sigma: Tensor) -> Tensor:
        return w2_energy(y, w, x, A, sigma)

    def gradient(self, y: Tensor, w: Tensor, x: Tensor, A: Tensor, sigma: Tensor) -> Tensor:
        return 2.0 * ((w * (y @ A.T - x)) @ A + sigma**2 * y)

    def hessian(self, y: Tensor, w: Tensor, x: Tensor, A: Tensor, sigma: Tensor) -> Tensor:
        # 2(Aᵀ W A + diag σ²) in one (B, 40, 40) buffer: the factor 2 rides on A (68×40) and
        # the prior goes onto the diagonal in place (no diag_embed temporary)
        h = torch.einsum("ri,br,rj->bij", 2.0 * A, w, A)
        torch.diagonal(h, dim1=-2, dim2=-1).add_(2.0 * sigma**2)
        return h


def w2_normal_matrix(w: Tensor, A: Tensor, sigma: Tensor) -> Tensor:
    """``Aᵀ W_b A + diag σ²`` per problem, ``(B, 40, 40)``."""
    m = torch.einsum("ri,br,rj->bij", A, w, A)
    return m + torch.diag_embed((sigma**2).expand(w.shape[0], -1))


def w2_design(w: Tensor, x: Tensor, A: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """The stacked least-squares system ``([√w_b ⊙ A; diag σ], [√w_b ⊙ x_b; 0])``:
    shapes ``(B, 108, 40)`` and ``(B, 108)``."""
    sw = w.sqrt()
    top = sw.unsqueeze(-1) * A
    prior = torch.diag_embed(sigma.expand(w.shape[0], -1))
    rhs = torch.cat([sw * x, torch.zeros(w.shape[0], W2_DIM, dtype=x.dtype)], -1)
    return torch.cat([top, prior], 1), rhs


def w2_loss(y: Tensor, y_true: Tensor) -> Tensor:
    """Mean squared error to the known solutions."""
    return ((y - y_true) ** 2).mean()


# --------------------------------------------------------------------------------------------
# W3


@dataclass
class W3Data:
    """A W3 instance: one real image (clean, and noisy with generated noise).

    Attributes:
        clean, noisy: ``(B, H·W)``.
        shape: ``(H, W)``.
        filters: initial learnable filters ``(J, 1, k, k)`` (generated, zero-mean).
        alpha: initial weights ``(J,)``; scale: initial scales ``(J,)``.
        source: where the image came from.
    """

    clean: Tensor
    noisy: Tensor
    shape: tuple[int, int]
    filters: Tensor
    alpha: Tensor
    scale: Tensor
    source: str


def make_w3(
    size: int = 512,
    n_filters: int = 8,
    ksize: int = 3,
    noise: float = 0.1,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> W3Data:
    """scikit-image's ``camera()`` (a real 512×512 photograph), resized to ``size`` (nearest
    block average or tiling: smaller sizes crop the centre, larger sizes tile by reflection),
    scaled to ``[0, 1]``, plus generated Gaussian noise of standard deviation ``noise``."""
    try:
        from skimage import data as skdata
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise ImportError("W3 needs scikit-image: pip install 'wibergian[bench]'") from exc
    if size < 8:
        raise ValueError(f"W3 image size must be >= 8, got {size}")
    img = np.asarray(skdata.camera(), dtype=np.float64) / 255.0
    h = img.shape[0]
    if size <= h:
        o = (h - size) // 2
        img = img[o : o + size, o : o + size]
        source = f"skimage.data.camera() centre crop {size}x{size}"
    else:
        reps = -(-size // h)
        img = np.pad(img, ((0, reps * h - h), (0, reps * h - h)), mode="symmetric")[:size, :size]
        source = f"skimage.data.camera() reflected to {size}x{size}"
    gen = torch.Generator().manual_seed(seed)
    clean = torch.as_tensor(img, dtype=dtype).reshape(1, -1)
    noisy = clean + noise * torch.randn(clean.shape, generator=gen, dtype=dtype)
    f = torch.randn(n_filters, 1, ksize, ksize, generator=gen, dtype=dtype)
    f = f - f.mean(dim=(2, 3), keepdim=True)
    f = f / f.flatten(1).norm(dim=1)[:, None, None, None]
    return W3Data(
        clean=clean,
        noisy=noisy,
        shape=(size, size),
        filters=f,
        alpha=torch.full((n_filters,), 0.01, dtype=dtype),
        scale=torch.full((n_filters,), 0.1, dtype=dtype),
        source=source,
    )


class W3Energy:
    """Field-of-experts-like denoising energy for images of a fixed shape.

    ``E(x) = ½||x - z||² + Σ_j α_j Σ_p log(1 + (f_j ⋆ x)_p² / s_j²)``; ``x, z`` are ``(B, H·W)``.
    """

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape

    def __call__(
        self, y: Tensor, z: Tensor, filters: Tensor, alpha: Tensor, scale: Tensor
    ) -> Tensor:
        b = y.shape[0]
        img = y.reshape(b, 1, *self.shape)
        resp = torch.nn.functional.conv2d(img, filters)  # (B, J, H-k+1, W-k+1), valid
        pen = torch.log1p((resp / scale[None, :, None, None]) ** 2)
        prior = (alpha[None, :, None, None] * pen).sum(dim=(1, 2, 3))
        return 0.5 * ((y - z) ** 2).sum(-1) + prior

    def gradient(
        self, y: Tensor, z: Tensor, filters: Tensor, alpha: Tensor, scale: Tensor
    ) -> Tensor:
        """Closed form ``∇E = (x - z) + Σ_j f_j ⋆ᵀ (α_j · 2r_j / (s_j² + r_j²))`` with
        ``r_j = f_j ⋆ x`` (``⋆ᵀ``: the transposed, "full" convolution), ``(B, H·W)``; written in
        differentiable ops, so Hessian-vector products cost one convolution each way."""
        b = y.shape[0]
        resp = torch.nn.functional.conv2d(y.reshape(b, 1, *self.shape), filters)
        s2 = (scale**2)[None, :, None, None]
        dpen = (2.0 * alpha)[None, :, None, None] * resp / (s2 + resp * resp)
        back = torch.nn.functional.conv_transpose2d(dpen, filters)  # (B, 1, H, W)
        return (y - z) + back.reshape(b, -1)

    def value_and_gradient(
        self, y: Tensor, z: Tensor, filters: Tensor, alpha: Tensor, scale: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``(E (B,), ∇E (B, H·W))`` from one convolution of ``y`` (L-BFGS's line search)."""
        b = y.shape[0]
        resp = torch.nn.functional.conv2d(y.reshape(b, 1, *self.shape), filters)
        s2 = (scale**2)[None, :, None, None]
        r2 = resp * resp
        prior = (alpha[None, :, None, None] * torch.log1p(r2 / s2)).sum(dim=(1, 2, 3))
        dpen = (2.0 * alpha)[None, :, None, None] * resp / (s2 + r2)
        back = torch.nn.functional.conv_transpose2d(dpen, filters).reshape(b, -1)
        diff = y - z
        return 0.5 * (diff * diff).sum(-1) + prior, diff + back

    def hvp_operator(
        self, y: Tensor, z: Tensor, filters: Tensor, alpha: Tensor, scale: Tensor
    ) -> Callable[[Tensor], Tensor]:
        """``v ↦ H v = v + Σ_j f_j ⋆ᵀ (c_j ⊙ (f_j ⋆ v))`` with the curvature of the penalty
        ``c_j = 2α_j (s_j² - r_j²) / (s_j² + r_j²)²`` computed once at ``y``; ``v``:
        ``(B, H·W)``."""
        b = y.shape[0]
        conv = torch.nn.functional.conv2d
        resp = conv(y.reshape(b, 1, *self.shape), filters)
        s2 = (scale**2)[None, :, None, None]
        r2 = resp * resp
        den = s2 + r2
        curv = (2.0 * alpha)[None, :, None, None] * (s2 - r2) / (den * den)

        def apply(v: Tensor) -> Tensor:
            t = conv(v.reshape(v.shape[0], 1, *self.shape), filters).mul_(curv)
            return v + torch.nn.functional.conv_transpose2d(t, filters).reshape(v.shape[0], -1)

        return apply


def w3_loss(y: Tensor, clean: Tensor) -> Tensor:
    """Mean squared error to the clean image."""
    return ((y - clean) ** 2).mean()
