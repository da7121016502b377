"""Tracker-zoo generator: GENERATED stand-in for the VOT2018 results (default fusion data).

Ground truth per sequence (all in pixels):

- centre ``c_f``: velocity ``v_f = ρ v_{f-1} + sqrt(1 - ρ²) σ_v ε`` (Ornstein-Uhlenbeck),
  reflected at the image border;
- size: ``log sqrt(w h)`` and ``log(w / h)`` follow Gaussian random walks;
- occlusions: Poisson events of random length; occlusion level ramps 0 -> 1 -> 0;
- difficulty ``d_f ∈ [0, 1]``: occlusion level + fast motion (speed / size) + fast scaling.

Trackers (``T`` of them, latent skill ``q_t``):

- while tracking: centre ``c_f + size · (drift_{t,f} + jitter_t (1 + 2 d_f) ε)`` with
  ``drift_{t,f}`` a 2-D random walk (error growing like ``sqrt(f)``); size
  ``gt size · exp(bias_t + sizedrift_{t,f} + jitter_t ε)`` with a systematic bias per tracker
  (some trackers box too small or too large);
- failure: per-frame hazard ``h_{t,f} = base_t (1 + gain · d_f)``; the draws of all trackers on
  a frame share a Gaussian copula with correlation ``correlation`` (failures cluster at hard
  moments);
- a shared, slowly varying error common to all trackers (the target's appearance misleads
  them alike; no fusion can remove it) caps everyone's IoU;
- once lost (no re-initialisation): the box locks onto background ``U[1, 4]`` box sizes away
  and wanders, or (probability ``distractor_prob``) onto the sequence's distractor, a similar
  object that moves with the target at a fixed offset, so failures pile up at one wrong place
  (this is what makes median fusion fail); it re-acquires the target with a small per-frame
  probability. A share of the trackers instead write failure code 2 on the frame they lose
  the target and 0 (unknown) while lost, so both VOT conventions appear.

Frame 0 of every tracker is code 1 (initialisation), as in VOT result files.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ndtr

from .vot import Region, result_path, write_regions, write_sequence_list

DEFAULT_CONFIG = "zoo_default.toml"


def load_config(path: Path | str | None = None, overrides: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """Read the zoo configuration (the packaged default when ``path`` is None).

    ``overrides`` maps ``"key"`` or ``"section.key"`` to a value; unknown keys are errors.
    """
    if path is None:
        text = resources.files(__package__).joinpath(DEFAULT_CONFIG).read_text()
    else:
        text = Path(path).read_text()
    cfg = tomllib.loads(text)
    default = tomllib.loads(resources.files(__package__).joinpath(DEFAULT_CONFIG).read_text())
    _check_keys(cfg, default, str(path or DEFAULT_CONFIG))
    for key, value in (overrides or {}).items():
        parts = key.split(".")
        node = cfg
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ValueError(f"unknown zoo setting {key!r}")
            node = node[p]
        if parts[-1] not in node:
            raise ValueError(f"unknown zoo setting {key!r}")
        node[parts[-1]] = _convert(value, node[parts[-1]], key)
    return cfg


def _convert(value: Any, like: Any, key: str) -> Any:
    """``value`` (often text from ``--set``) as the type of the default ``like``."""
    if isinstance(like, bool):
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"zoo setting {key!r} expects true or false, got {value!r}")
    try:
        return type(like)(value)
    except (TypeError, ValueError):
        raise ValueError(f"zoo setting {key!r} expects a {type(like).__name__}, "
                         f"got {value!r}") from None


def _check_keys(cfg: dict, default: dict, where: str, prefix: str = "") -> None:
    for k, v in cfg.items():
        if k not in default:
            raise ValueError(f"{where}: unknown zoo setting {prefix + k!r}")
        if isinstance(v, dict):
            _check_keys(v, default[k], where, prefix + k + ".")
    for k in default:
        if k not in cfg:
            raise ValueError(f"{where}: missing zoo setting {prefix + k!r}")


@dataclass
class TrackerTruth:
    """Hidden properties of one generated tracker (for plots; never used in training)."""

    name: str
    skill: float
    jitter: float
    drift: float
    size_bias: float
    hazard: float
    reports_failure: bool


def _interp(good: float, bad: float, q: np.ndarray) -> np.ndarray:
    """Geometric interpolation: ``bad^(1-q) good^q``."""
    return np.exp((1 - q) * np.log(bad) + q * np.log(good))


def make_trackers(cfg: dict[str, Any], rng: np.random.Generator) -> list[TrackerTruth]:
    c = cfg["trackers"]
    T = cfg["n_trackers"]
    q = (np.arange(T) / max(T - 1, 1)) ** c["skill_power"]
    q = q[rng.permutation(T)]

    def noisy(good: float, bad: float) -> np.ndarray:
        return _interp(good, bad, q) * np.exp(c["property_noise"] * rng.standard_normal(T))

    jitter, drift, hazard = (noisy(c["jitter_good"], c["jitter_bad"]),
                             noisy(c["drift_good"], c["drift_bad"]),
                             noisy(c["hazard_good"], c["hazard_bad"]))
    bias = c["size_bias_mean"] + c["size_bias_std"] * rng.standard_normal(T)
    reports = rng.random(T) < c["report_failure_fraction"]
    return [TrackerTruth(f"gen_tracker_{t:02d}", float(q[t]), float(jitter[t]),
                         float(drift[t]), float(bias[t]), float(hazard[t]), bool(reports[t]))
            for t in range(T)]


def make_groundtruth(cfg: dict[str, Any], rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """One sequence: boxes (L, 4) ``x, y, w, h`` and difficulty (L,) in [0, 1]."""
    g = cfg["target"]
    W, H = cfg["image_width"], cfg["image_height"]
    L = int(rng.integers(cfg["length_min"], cfg["length_max"] + 1))
    log_size = np.log(rng.uniform(g["size_min"], g["size_max"]))
    log_aspect = rng.uniform(np.log(g["aspect_min"]), np.log(g["aspect_max"]))
    c = np.array([rng.uniform(0.25, 0.75) * W, rng.uniform(0.25, 0.75) * H])
    v = g["speed"] * rng.standard_normal(2)
    rho = g["velocity_memory"]
    occ = np.zeros(L)
    n_occ = rng.poisson(g["occlusions_per_100"] * L / 100)
    for _ in range(n_occ):
        start = int(rng.integers(1, L))
        n = int(rng.integers(g["occlusion_min"], g["occlusion_max"] + 1))
        ramp = np.sin(np.linspace(0, np.pi, n + 2)[1:-1])
        end = min(L, start + n)
        occ[start:end] = np.maximum(occ[start:end], ramp[: end - start])
    boxes = np.zeros((L, 4))
    diff = np.zeros(L)
    for f in range(L):
        if f > 0:
            v = rho * v + np.sqrt(1 - rho**2) * g["speed"] * rng.standard_normal(2)
            c = c + v
            dls = g["scale_rate"] * rng.standard_normal()
            log_size = np.clip(log_size + dls, np.log(12.0), np.log(0.5 * min(W, H)))
            log_aspect = np.clip(log_aspect + g["aspect_rate"] * rng.standard_normal(),
                                 np.log(0.25), np.log(4.0))
        else:
            dls = 0.0
        size = np.exp(log_size)
        w, h = size * np.exp(log_aspect / 2), size * np.exp(-log_aspect / 2)
        for k, (lim, ext) in enumerate(((W, w), (H, h))):  # reflect at the border
            if c[k] < ext / 2:
                c[k], v[k] = ext - c[k], abs(v[k])
            elif c[k] > lim - ext / 2:
                c[k], v[k] = 2 * lim - ext - c[k], -abs(v[k])
        boxes[f] = (c[0] - w / 2, c[1] - h / 2, w, h)
        motion = min(1.0, float(np.linalg.norm(v)) / (0.08 * size))
        scaling = min(1.0, abs(dls) / (3 * g["scale_rate"]))
        diff[f] = min(1.0, occ[f] + 0.5 * motion + 0.3 * scaling)
    return boxes, diff


def run_trackers(gt: np.ndarray, diff: np.ndarray, trackers: list[TrackerTruth],
                 cfg: dict[str, Any], rng: np.random.Generator) -> list[list[Region]]:
    """Every tracker's output on one sequence, as VOT regions."""
    c = cfg["trackers"]
    T, L = len(trackers), gt.shape[0]
    jit = np.array([t.jitter for t in trackers])
    drift_step = np.array([t.drift for t in trackers])
    bias = np.array([t.size_bias for t in trackers])
    base = np.array([t.hazard for t in trackers])
    reports = np.array([t.reports_failure for t in trackers])
    rho = c["correlation"]
    drift = np.zeros((T, 2))
    sdrift = np.zeros(T)
    lost = np.zeros(T, dtype=bool)
    lock_c = np.zeros((T, 2))
    lock_s = np.ones((T, 2))
    # a per-sequence distractor (similar object) near the target: failures often lock onto it
    d_ang = rng.uniform(0, 2 * np.pi)
    d_off = rng.uniform(c["lock_distance_min"], c["lock_distance_max"])
    d_off = d_off * np.array([np.cos(d_ang), np.sin(d_ang)])
    shared = np.zeros(2)
    on_dist = np.zeros(T, dtype=bool)
    pers = np.zeros((T, 2))
    a = c["shared_error_memory"]
    out: list[list[Region]] = [[Region.special(1)] for _ in range(T)]
    for f in range(1, L):
        x, y, w, h = gt[f]
        gc, size = np.array([x + w / 2, y + h / 2]), np.sqrt(w * h)
        d_off = d_off + 0.02 * rng.standard_normal(2)
        shared = a * shared + np.sqrt(1 - a**2) * c["shared_error"] * rng.standard_normal(2)
        drift += drift_step[:, None] * rng.standard_normal((T, 2))
        sdrift += c["size_drift"] * rng.standard_normal(T)
        hazard = np.clip(base * (1 + c["difficulty_gain"] * diff[f]), 0, 1)
        z = np.sqrt(rho) * rng.standard_normal() + np.sqrt(1 - rho) * rng.standard_normal(T)
        fail = (~lost) & (ndtr(z) < hazard)
        recover = lost & (rng.random(T) < c["recover_prob"])
        lost[recover] = False
        drift[recover] = 0.0
        if fail.any():
            n = int(fail.sum())
            ang = rng.uniform(0, 2 * np.pi, n)
            dist = rng.uniform(c["lock_distance_min"], c["lock_distance_max"], n) * size
            lock_c[fail] = gc + dist[:, None] * np.stack((np.cos(ang), np.sin(ang)), 1)
            on_d = rng.random(n) < c["distractor_prob"]
            on_dist[fail] = on_d
            pers[fail] = 0.1 * rng.standard_normal((n, 2))
            lock_s[fail] = np.array([w, h]) * np.exp(0.3 * rng.standard_normal((n, 2)))
            lost[fail] = True
        lock_c += c["lock_wander"] * lock_s.mean(1, keepdims=True) * rng.standard_normal((T, 2))
        lock_c[on_dist] = gc + size * (d_off + pers[on_dist])
        jf = jit * (1 + 2 * diff[f])
        centre = gc + size * (shared + drift + jf[:, None] * rng.standard_normal((T, 2)))
        scale = np.exp(bias + sdrift)[:, None] * np.exp(jf[:, None] * rng.standard_normal((T, 2)))
        wh = np.array([w, h]) * scale
        centre = np.where(lost[:, None], lock_c, centre)
        wh = np.where(lost[:, None], lock_s, wh)
        for t in range(T):
            if lost[t] and reports[t]:
                out[t].append(Region.special(2 if fail[t] else 0))
            else:
                cx, cy = centre[t]
                bw, bh = wh[t]
                out[t].append(Region.rectangle(cx - bw / 2, cy - bh / 2, bw, bh))
    return out


def _round(r: Region, decimals: int) -> Region:
    if r.kind == "special":
        return r
    return Region(r.kind, tuple(round(v, decimals) for v in r.values))


def generate(out_dir: Path | str, cfg: dict[str, Any] | None = None,
             experiment: str = "baseline") -> Path:
    """Write a generated zoo as a VOT folder; returns ``out_dir``."""
    cfg = load_config() if cfg is None else cfg
    out = Path(out_dir)
    rng = np.random.default_rng(cfg["seed"])
    trackers = make_trackers(cfg, rng)
    names = [f"gen_seq_{i:03d}" for i in range(cfg["n_sequences"])]
    d = cfg["decimals"]
    for name in names:
        gt, diff = make_groundtruth(cfg, rng)
        regions = []
        for x, y, w, h in gt:
            if cfg["gt_as_polygon"]:
                regions.append(Region.polygon((x, y, x + w, y, x + w, y + h, x, y + h)))
            else:
                regions.append(Region.rectangle(x, y, w, h))
        write_regions(out / "sequences" / name / "groundtruth.txt",
                      [_round(r, d) for r in regions])
        for tr, regs in zip(trackers, run_trackers(gt, diff, trackers, cfg, rng), strict=True):
            write_regions(result_path(out, tr.name, name, experiment),
                          [_round(r, d) for r in regs])
    write_sequence_list(out, names)
    (out / "zoo_config.json").write_text(json.dumps(cfg, indent=2))
    (out / "zoo_truth.json").write_text(json.dumps(
        {"label": "generated data (tracker zoo), not real VOT results",
         "trackers": [vars(t) for t in trackers]}, indent=2))
    (out / "README.txt").write_text(
        "GENERATED data: a synthetic tracker zoo written by `wibergian fuse generate`\n"
        "in the VOT folder format. Not real VOT2018 results.\n")
    return out
