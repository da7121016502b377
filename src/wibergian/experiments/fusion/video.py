"""Video sequences built from real photographs, with exact ground truth (for real trackers).

A sequence is a textured object (a crop of one real photograph from scikit-image's bundled
images) moving over a panning crop of another real photograph, rendered frame by frame:

- motion: Ornstein-Uhlenbeck velocity of the object's centre, reflected at the frame border,
  with bursts of fast motion; the background pans slowly (camera motion);
- scale: log-size = random walk + a slow sinusoid (object approaches / recedes), aspect fixed;
- illumination: a global gain that drifts and jumps (lights switched), plus an object-only gain;
- motion blur: the object layer is blurred along its velocity with a line kernel whose length
  is the distance travelled during the exposure (fast bursts smear it over many pixels);
- occlusion: textured occluders (crops of a third photograph) sweep across the object;
- distractors: copies of the same object texture (slightly re-lit) with their own motion,
  some of them launched to cross the target.

Ground truth is the rectangle the object's texture is warped onto, ``x, y, w, h`` in pixels
(pixel ``j`` covers ``[j, j + 1)``): exact by construction (the object is the full warped
patch; occlusion hides it but does not change the box, as in VOT). The motion, occlusion,
illumination and blur are synthetic; the images and the trackers that will run on them are
real. Everything is drawn from ``numpy.random.default_rng(seed)``: a sequence is a function
of its seed.

Needs OpenCV (``cv2``) and scikit-image: the ``[trackers]`` extra.
"""

from __future__ import annotations

import functools

import numpy as np

FRAME_W, FRAME_H = 256, 192
#: Real photographs from scikit-image's bundled data (no download needed).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
          "immunohistochemistry", "camera", "moon", "brick", "grass", "gravel", "coins",
          "clock", "cell", "page")
OBJECT_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "coins", "camera", "clock",
                 "immunohistochemistry", "hubble_deep_field", "brick")


@functools.cache
def _photo(name: str) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 255] of a bundled scikit-image photograph (read-only)."""
    import skimage.data

    im = np.asarray(getattr(skimage.data, name)())
    if im.ndim == 2:
        im = np.repeat(im[:, :, None], 3, axis=2)
    out = im[:, :, :3].astype(np.float32)
    out.flags.writeable = False
    return out


def _ou_path(rng: np.random.Generator, n: int, start: np.ndarray, sigma: float,
             theta: float, lo: np.ndarray, hi: np.ndarray, bursts: np.ndarray) -> np.ndarray:
    """(n, 2) positions: OU velocity (×burst factor per frame), reflected into [lo, hi]."""
    pos = np.empty((n, 2))
    p, v = start.astype(float).copy(), rng.normal(0, sigma, 2)
    for i in range(n):
        pos[i] = p
        v = v - theta * v + rng.normal(0, sigma * np.sqrt(2 * theta), 2)
        p = p + v * bursts[i]
        for k in range(2):
            if p[k] < lo[k]:
                p[k], v[k] = 2 * lo[k] - p[k], abs(v[k])
            elif p[k] > hi[k]:
                p[k], v[k] = 2 * hi[k] - p[k], -abs(v[k])
            p[k] = min(max(p[k], lo[k]), hi[k])
    return pos


def _line_kernel(dx: float, dy: float) -> np.ndarray | None:
    """Normalised motion-blur kernel for a displacement of (dx, dy) pixels (None if < 1.5)."""
    import cv2

    length = float(np.hypot(dx, dy))
    if length < 1.5:
        return None
    k = int(np.ceil(length)) | 1
    ker = np.zeros((k, k), np.float32)
    c = (k - 1) / 2
    ux, uy = dx / length, dy / length
    cv2.line(ker, (int(round(c - ux * length / 2)), int(round(c - uy * length / 2))),
             (int(round(c + ux * length / 2)), int(round(c + uy * length / 2))), 1.0, 1)
    return ker / ker.sum()


def _shrink_once(patch: np.ndarray, max_w: float, max_h: float) -> np.ndarray:
    """Downsample a patch once (area averaging) to about the largest size it will be drawn
    at, so that per-frame bilinear warping never shrinks it by much (no aliasing)."""
    import cv2

    ph, pw = patch.shape[:2]
    f = min(1.0, 1.25 * max(max_w / pw, max_h / ph))
    if f >= 1.0:
        return patch
    return cv2.resize(patch, (max(int(round(pw * f)), 2), max(int(round(ph * f)), 2)),
                      interpolation=cv2.INTER_AREA)


def _coverage(lo: float, size: float, start: int, stop: int) -> np.ndarray:
    """Fraction of each pixel ``[j, j + 1)``, ``start <= j < stop``, inside ``[lo, lo + size)``."""
    j = np.arange(start, stop, dtype=np.float64)
    return np.clip(np.minimum(j + 1, lo + size) - np.maximum(j, lo), 0.0, 1.0)


def _warp(patch: np.ndarray, box: np.ndarray, pad: int = 2
          ) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]] | None:
    """Draw a (ph, pw, 3) patch onto the continuous box ``x, y, w, h`` of the frame.

    Returns premultiplied colour (h, w, 3), coverage alpha (h, w) and the frame window
    (row slice, column slice) they cover, or None when the box misses the frame. The alpha is
    the exact area of each pixel ``[j, j + 1)`` inside the box (so the drawn object covers
    exactly the ground-truth box, anti-aliased); the colour is the patch warped bilinearly
    with patch pixel ``u`` centred at ``x + (u + 0.5) w / pw`` (frame pixel ``j`` centred at
    ``j + 0.5``).
    """
    import cv2

    ph, pw = patch.shape[:2]
    x, y, w, h = box
    x0, y0 = max(int(np.floor(x)) - pad, 0), max(int(np.floor(y)) - pad, 0)
    x1 = min(int(np.ceil(x + w)) + pad, FRAME_W)
    y1 = min(int(np.ceil(y + h)) + pad, FRAME_H)
    if x1 <= x0 or y1 <= y0:
        return None
    sx, sy = w / pw, h / ph
    m = np.array([[sx, 0, x + 0.5 * sx - 0.5 - x0], [0, sy, y + 0.5 * sy - 0.5 - y0]])
    col = cv2.warpAffine(patch, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    alpha = np.outer(_coverage(y, h, y0, y1), _coverage(x, w, x0, x1)).astype(np.float32)
    return col * alpha[:, :, None], alpha, (slice(y0, y1), slice(x0, x1))


def _over(frame: np.ndarray, layer: tuple | None) -> None:
    """Composite a premultiplied layer from :func:`_warp` over ``frame`` in place."""
    if layer is None:
        return
    col, a, win = layer
    frame[win] = col + frame[win] * (1 - a[:, :, None])


def render_sequence(seed: int, length: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames (BGR uint8, FRAME_H × FRAME_W) and the exact ground truth (length, 4).

    Every draw comes from ``numpy.random.default_rng(seed)``.
    """
    import cv2

    rng = np.random.default_rng(seed)
    names = list(PHOTOS)
    bg_name = names[rng.integers(len(names))]
    obj_name = [n for n in OBJECT_PHOTOS if n != bg_name][rng.integers(len(OBJECT_PHOTOS) - 1)]
    occ_name = [n for n in PHOTOS if n not in (bg_name, obj_name)][rng.integers(len(PHOTOS) - 2)]

    # background: the photo scaled to 1.4× the frame, panned slowly
    bg = _photo(bg_name)
    scale = 1.4 * max(FRAME_W / bg.shape[1], FRAME_H / bg.shape[0])
    bg = cv2.resize(bg, (int(np.ceil(bg.shape[1] * scale)), int(np.ceil(bg.shape[0] * scale))),
                    interpolation=cv2.INTER_AREA)
    span = np.array([bg.shape[1] - FRAME_W, bg.shape[0] - FRAME_H], float)
    pan = _ou_path(rng, length, rng.uniform(0.2, 0.8, 2) * span, rng.uniform(0.1, 0.8), 0.02,
                   np.zeros(2), span, np.ones(length))

    # object: a crop of another photo; base size and aspect
    op = _photo(obj_name)
    aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))     # h / w
    cw = int(rng.uniform(0.25, 0.45) * min(op.shape[:2]))
    ch = int(min(cw * aspect, op.shape[0] - 1))
    cw = int(ch / aspect)
    ox, oy = rng.integers(0, op.shape[1] - cw), rng.integers(0, op.shape[0] - ch)
    patch = np.ascontiguousarray(op[oy:oy + ch, ox:ox + cw])
    w0 = rng.uniform(28, 50)

    # scale: random walk + slow sinusoid, log-size within ±0.55
    walk = np.cumsum(rng.normal(0, rng.uniform(0.004, 0.015), length))
    amp, period = rng.uniform(0.05, 0.4), rng.uniform(80, 300)
    logs = np.clip(walk + amp * np.sin(2 * np.pi * np.arange(length) / period
                                       + rng.uniform(0, 2 * np.pi)), -0.55, 0.55)
    sizes = w0 * np.exp(logs)[:, None] * np.array([1.0, aspect])        # (L, 2) w, h

    # centre: OU with bursts of fast motion (these frames get strong motion blur)
    bursts = np.ones(length)
    for _ in range(rng.poisson(length / 120)):
        s = rng.integers(0, length)
        bursts[s:s + rng.integers(8, 25)] = rng.uniform(2.5, 5.0)
    margin = sizes.max(0) / 2 + 2
    lo, hi = margin, np.array([FRAME_W, FRAME_H]) - margin
    centre = _ou_path(rng, length, rng.uniform(lo, hi), rng.uniform(0.8, 2.2), 0.05, lo, hi,
                      bursts)
    gt = np.concatenate([centre - sizes / 2, sizes], axis=1)
    patch = _shrink_once(patch, *(sizes.max(0) * 1.25))

    # illumination: global gain drift + jumps, object-only gain drift
    gain = np.exp(np.cumsum(rng.normal(0, 0.01, length)))
    for _ in range(rng.poisson(length / 150)):
        gain[rng.integers(1, length):] *= np.exp(rng.normal(0, 0.35))
    gain = np.clip(gain, 0.35, 1.8)
    obj_gain = np.clip(np.exp(np.cumsum(rng.normal(0, 0.008, length))), 0.6, 1.5)

    # distractors: same texture, own motion; some launched across the target
    n_dis = int(rng.choice([0, 1, 1, 2]))
    dis = []
    for _ in range(n_dis):
        s0 = int(rng.integers(0, max(length // 2, 1)))
        start = centre[s0] + rng.normal(0, 1, 2) * 80
        dp = _ou_path(rng, length, np.clip(start, lo, hi), rng.uniform(0.8, 2.2), 0.05, lo, hi,
                      np.ones(length))
        dis.append((dp, rng.uniform(0.8, 1.15), rng.uniform(0.75, 1.25)))

    # occluders: textured rectangles that sweep across the target's position
    occ_src = _photo(occ_name)
    occl = []
    for _ in range(rng.poisson(length / 100)):
        t0 = int(rng.integers(1, length))
        dur = int(rng.integers(8, 30))
        ow, oh = rng.uniform(0.8, 2.0) * sizes[t0]
        vel = rng.normal(0, 1, 2)
        vel = vel / np.linalg.norm(vel) * (sizes[t0].max() * 2 + ow) / dur
        cx, cy = rng.integers(0, occ_src.shape[1] - 40), rng.integers(0, occ_src.shape[0] - 40)
        tex = np.ascontiguousarray(occ_src[cy:cy + 40, cx:cx + 40])   # enlarged: no shrink
        occl.append((t0, dur, ow, oh, vel, tex))

    frames = []
    noise_sd = rng.uniform(1.0, 4.0)
    for f in range(length):
        px, py = pan[f]
        ix, iy = int(px), int(py)
        frame = bg[iy:iy + FRAME_H, ix:ix + FRAME_W].copy()
        for dp, g, sc in dis:
            _over(frame, _warp(patch * g, np.concatenate([dp[f] - sizes[f] * sc / 2,
                                                          sizes[f] * sc])))
        step = centre[f] - centre[f - 1] if f else np.zeros(2)
        ker = _line_kernel(*(0.8 * step))
        pad = 2 if ker is None else ker.shape[0] // 2 + 2
        layer = _warp(patch * obj_gain[f], gt[f], pad)
        if ker is not None and layer is not None:
            col, a, win = layer
            layer = (cv2.filter2D(col, -1, ker, borderType=cv2.BORDER_CONSTANT),
                     cv2.filter2D(a, -1, ker, borderType=cv2.BORDER_CONSTANT), win)
        _over(frame, layer)
        for t0, dur, ow, oh, vel, tex in occl:
            if t0 <= f < t0 + dur:
                c = centre[t0] + vel * (f - t0 - dur / 2)
                _over(frame, _warp(tex, np.array([c[0] - ow / 2, c[1] - oh / 2, ow, oh])))
        frame = frame * gain[f] + noise_sd * rng.standard_normal(frame.shape, np.float32)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8)[:, :, ::-1].copy())
    return frames, gt
