"""W3, the large benchmark workload (``n = H·W``).

Field-of-experts-like denoising of a real image ``z`` (noisy)

    E(x) = ½ ||x - z||² + Σ_j α_j Σ_p log(1 + (f_j ⋆ x)_p² / s_j²),

with learnable filters ``f`` (J, 1, k, k), weights ``α`` (J,) and scales ``s`` (J,). Loss: mean
squared error to the clean image.

The clean image is a real photograph bundled with scikit-image (optional ``[bench]`` extra); its
noise and the initial filters are generated (seeded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


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
