"""From a loaded VOT folder to per-frame tensors, train/test protocols, crowd baselines.

A *frame sample* holds, for one frame ``f`` of one sequence, with ``T`` trackers:

- ``boxes`` (T, 4) every tracker's box ``x, y, w, h`` (0 where the tracker gave no region);
- ``valid`` (T,) True where it gave one (failure/unknown/initialisation codes are False);
- ``gt`` (4,) the ground-truth box;
- ``frame`` () the frame index ``f`` (0 = initialisation frame);
- ``first_size`` (T, 2) the tracker's first-frame box size ``(w_0, h_0)``.

Frames used: ``f >= 1`` (frame 0 is the initialisation, given to every tracker), ground truth
known (not a special code), at least one valid tracker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .geometry import box_to_corners, iou
from .vot import VOTDataset

PROTOCOLS = ("frames", "sequences")


@dataclass
class Frames:
    boxes: torch.Tensor       # (N, T, 4)
    valid: torch.Tensor       # (N, T) bool
    gt: torch.Tensor          # (N, 4)
    frame: torch.Tensor       # (N,)
    first_size: torch.Tensor  # (N, T, 2)
    seq: torch.Tensor         # (N,) long, index into ``names``
    names: list[str]
    trackers: list[str]

    def __len__(self) -> int:
        return self.gt.shape[0]

    def subset(self, idx: torch.Tensor) -> Frames:
        return Frames(self.boxes[idx], self.valid[idx], self.gt[idx], self.frame[idx],
                      self.first_size[idx], self.seq[idx], self.names, self.trackers)

    def inputs(self) -> tuple[torch.Tensor, ...]:
        """The model inputs ``(boxes, valid, frame, first_size)``."""
        return self.boxes, self.valid, self.frame, self.first_size

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """Inputs then ground truth: what the trainer samples rows of."""
        return (*self.inputs(), self.gt)


def frames_from_dataset(ds: VOTDataset, dtype: torch.dtype = torch.float32) -> Frames:
    boxes, valid, gt, frame, first, seq = [], [], [], [], [], []
    for i, s in enumerate(ds.sequences):
        f = np.arange(s.length)
        keep = (f >= 1) & np.all(np.isfinite(s.gt), axis=1) & s.valid.any(axis=0)
        idx = f[keep]
        b = np.where(s.valid[:, idx, None], s.boxes[:, idx], 0.0)
        boxes.append(b.transpose(1, 0, 2))
        valid.append(s.valid[:, idx].T)
        gt.append(s.gt[idx])
        frame.append(idx)
        first.append(np.broadcast_to(s.first_size, (len(idx), *s.first_size.shape)))
        seq.append(np.full(len(idx), i))

    def cat(xs: list[np.ndarray], dt: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.concatenate(xs, axis=0), dtype=dt)

    return Frames(cat(boxes, dtype), cat(valid, torch.bool), cat(gt, dtype), cat(frame, dtype),
                  cat(first, dtype), cat(seq, torch.long), [s.name for s in ds.sequences],
                  list(ds.trackers))


def split(frames: Frames, protocol: str, seed: int, train_fraction: float = 2 / 3
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(train, test)`` for one of the two protocols of Table 1.

    ``"frames"``: every frame independently to train with probability ``train_fraction``
    (frames of one sequence end up on both sides: neighbouring frames are nearly identical, so
    this protocol leaks and measures close to training error). ``"sequences"``: sequences in a
    random order go to train until it holds ``train_fraction`` of the frames; the rest is test.
    """
    g = torch.Generator().manual_seed(seed)
    n = len(frames)
    if protocol == "frames":
        perm = torch.randperm(n, generator=g)
        k = round(train_fraction * n)
        return perm[:k].sort().values, perm[k:].sort().values
    if protocol == "sequences":
        n_seq = len(frames.names)
        counts = torch.bincount(frames.seq, minlength=n_seq)
        order = torch.randperm(n_seq, generator=g)
        cum = torch.cumsum(counts[order], 0)
        n_train = int((cum < train_fraction * n).sum()) + 1
        n_train = min(max(n_train, 1), n_seq - 1)
        is_train = torch.zeros(n_seq, dtype=torch.bool)
        is_train[order[:n_train]] = True
        mask = is_train[frames.seq]
        return mask.nonzero().squeeze(1), (~mask).nonzero().squeeze(1)
    raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")


# ----------------------------------------------------------------------------- baselines


def masked_median(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Median over dim 1 of ``x`` (N, T, K) among the ``valid`` (N, T) entries -> (N, K).

    The usual median: the middle value for an odd count, the mean of the two middle values
    for an even count (``torch.nanmedian`` would return the lower one). NaN where no entry is
    valid.
    """
    big = torch.finfo(x.dtype).max
    filled = torch.where(valid.unsqueeze(-1), x, torch.full_like(x, big))
    srt = filled.sort(dim=1).values
    k = valid.sum(1, keepdim=True).unsqueeze(-1).expand(-1, 1, x.shape[-1])   # (N, 1, K)
    lo = srt.gather(1, ((k - 1) // 2).clamp(min=0)).squeeze(1)
    hi = srt.gather(1, (k // 2).clamp(max=x.shape[1] - 1)).squeeze(1)
    med = (lo + hi) / 2
    return torch.where(k.squeeze(1) > 0, med, torch.full_like(med, float("nan")))


def crowd_fusion(frames: Frames, how: str) -> torch.Tensor:
    """Mean or median (per coordinate) of the valid trackers' corners -> boxes (N, 4)."""
    from .geometry import corners_to_box

    c = box_to_corners(frames.boxes)
    v = frames.valid
    if how == "mean":
        w = v.to(c.dtype).unsqueeze(-1)
        return corners_to_box((c * w).sum(1) / w.sum(1).clamp(min=1))
    if how == "median":
        return corners_to_box(masked_median(c, v))
    raise ValueError(f"unknown crowd fusion {how!r}")


def tracker_ious(frames: Frames) -> torch.Tensor:
    """(N, T) IoU of every tracker on every frame; 0 where it gave no region."""
    per = iou(frames.boxes, frames.gt.unsqueeze(1))
    return torch.where(frames.valid, per, torch.zeros_like(per))


def single_tracker_iou(frames: Frames) -> torch.Tensor:
    """(T,) mean IoU of each tracker; frames where it gave no region count as IoU 0."""
    return tracker_ious(frames).mean(0)


def best_single_on(train: Frames) -> int:
    """Index of the tracker with the highest mean IoU on ``train`` (the honest baseline:
    chosen on training frames, then scored on test frames). Ties: the first."""
    return int(torch.argmax(single_tracker_iou(train)))


def oracle_iou(frames: Frames) -> float:
    """Per-frame oracle upper bound: mean over frames of the best tracker's IoU on that frame
    (picking, with hindsight, the best box among the trackers' boxes on each frame)."""
    return float(tracker_ious(frames).max(1).values.mean())


def baselines(frames: Frames, train: Frames | None = None) -> dict:
    """Mean/median fusion, the per-frame oracle, every single tracker (sorted, best first)
    and, given the training frames, the single tracker chosen on them (``best_single_train``,
    its IoU on ``frames``)."""
    single = single_tracker_iou(frames)
    order = torch.argsort(single, descending=True)
    out = {
        "mean_fusion": float(iou(crowd_fusion(frames, "mean"), frames.gt).mean()),
        "median_fusion": float(iou(crowd_fusion(frames, "median"), frames.gt).mean()),
        "oracle_per_frame": oracle_iou(frames),
        "single_trackers": [[frames.trackers[i], float(single[i])] for i in order.tolist()],
    }
    if train is not None:
        k = best_single_on(train)
        out["best_single_train"] = float(single[k])
        out["best_single_train_name"] = frames.trackers[k]
    return out


def rank_consistency(frames: Frames) -> dict:
    """How much a tracker's quality is a property of the tracker rather than of the sequence.

    Per sequence, every tracker's mean IoU; returns the mean over pairs of sequences of the
    Spearman correlation of the trackers' ranks, the globally best tracker and on how many
    sequences it is the best, and the mean of the per-sequence best IoU.
    """
    per = tracker_ious(frames)
    S, T = len(frames.names), per.shape[1]
    present = [s for s in range(S) if bool((frames.seq == s).any())]
    m = torch.stack([per[frames.seq == s].mean(0) for s in present])      # (S', T)
    ranks = m.argsort(1).argsort(1).to(torch.float64)
    z = (ranks - ranks.mean(1, keepdim=True)) / ranks.std(1, keepdim=True)
    c = z @ z.T / (T - 1)
    iu = torch.triu_indices(len(present), len(present), 1)
    glob = per.mean(0)
    g = int(glob.argmax())
    return {"sequences": len(present), "trackers": T,
            "mean_spearman_between_sequences": float(c[iu[0], iu[1]].mean()),
            "global_best": frames.trackers[g], "global_best_iou": float(glob[g]),
            "global_best_is_best_on": int((m.argmax(1) == g).sum()),
            "per_sequence_best_mean_iou": float(m.max(1).values.mean())}
