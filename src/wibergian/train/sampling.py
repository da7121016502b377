"""Where batches come from: seeded, resumable index sampling and on-the-fly data.

Three kinds of ``train_data``:

- tensors: a tensor, a tuple/list of tensors or a dict of tensors with equal first dimension N;
  a batch is the same structure indexed by the batch's indices;
- a ``torch.utils.data.Dataset`` (``len`` + ``__getitem__``) or a list of examples that are not
  all tensors; items are collated with ``default_collate``;
- a callable ``(step, generator) -> batch`` producing the *global* batch for update ``step``
  (counted from 1) from the trainer's generator.

Index order: an endless stream of permutations of ``range(N)`` (one per epoch) drawn from the
trainer's generator; update s takes the next ``batch_size`` indices of the stream (a batch may
straddle two epochs; each example is seen once per epoch). Every rank draws the same global
indices and keeps its own contiguous slice ``[r * b, (r + 1) * b)`` with ``b = batch_size / K``.
For callables every rank builds the same global batch and keeps the same slice of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from .distributed import DistInfo

Batch = Any
DataFn = Callable[[int, torch.Generator], Batch]


class EpochSampler:
    """Endless stream of random permutations of ``range(n)``.

    State: the generator state at the start of the current epoch, the epoch number and the
    position inside the epoch's permutation (the permutation is re-drawn on load, so a
    checkpoint does not store N indices).
    """

    def __init__(self, n: int, generator: torch.Generator) -> None:
        if n < 1:
            raise ValueError("train_data holds no examples (N = 0)")
        self.n = n
        self.generator = generator
        self.epoch = 0
        self._start_epoch()

    def _start_epoch(self) -> None:
        self._epoch_state = self.generator.get_state()
        self._perm = torch.randperm(self.n, generator=self.generator)
        self.pos = 0

    def next_indices(self, count: int) -> torch.Tensor:
        """The next ``count`` indices (int64, shape (count,))."""
        parts = []
        while count > 0:
            if self.pos == self.n:
                self.epoch += 1
                self._start_epoch()
            take = min(count, self.n - self.pos)
            parts.append(self._perm[self.pos : self.pos + take])
            self.pos += take
            count -= take
        return torch.cat(parts)

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "epoch": self.epoch, "pos": self.pos,
                "epoch_generator": self._epoch_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["n"] != self.n:
            raise ValueError(
                f"checkpoint was made with {state['n']} training examples, the data now has "
                f"{self.n}"
            )
        self.generator.set_state(state["epoch_generator"])
        self._start_epoch()
        self.epoch = state["epoch"]
        self.pos = state["pos"]


def _tensor_leaves(batch: Batch) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, Mapping):
        return [t for v in batch.values() for t in _tensor_leaves(v)]
    if isinstance(batch, (tuple, list)):
        return [t for v in batch for t in _tensor_leaves(v)]
    return []


def _map_tensors(batch: Batch, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        return type(batch)((k, _map_tensors(v, fn)) for k, v in batch.items())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(_map_tensors(v, fn) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(_map_tensors(v, fn) for v in batch)
    return batch


def move_to(batch: Batch, device: torch.device) -> Batch:
    """``batch`` with every tensor moved to ``device``."""
    return _map_tensors(batch, lambda t: t.to(device))


def split_batch(batch: Batch, info: DistInfo) -> Batch:
    """This rank's contiguous share of a global batch.

    The batch size B is the first dimension of the first tensor found (depth first); every
    tensor whose first dimension is B is sliced to rows ``[r * B/K, (r + 1) * B/K)``; other
    tensors and non-tensors are passed unchanged (shared by all ranks).
    """
    if not info.is_distributed:
        return batch
    leaves = [t for t in _tensor_leaves(batch) if t.dim() >= 1]
    if not leaves:
        raise ValueError("cannot split a batch with no tensor of dimension >= 1 across ranks")
    size = leaves[0].shape[0]
    if size % info.world_size:
        raise ValueError(
            f"global batch of {size} examples does not split evenly across "
            f"{info.world_size} processes"
        )
    b = size // info.world_size
    lo, hi = info.rank * b, (info.rank + 1) * b

    def cut(t: torch.Tensor) -> torch.Tensor:
        return t[lo:hi] if t.dim() >= 1 and t.shape[0] == size else t

    return _map_tensors(batch, cut)


class BatchSource:
    """Produces this rank's batch for each update and checkpoints its position."""

    def __init__(
        self,
        train_data: Any,
        batch_size: int,
        generator: torch.Generator,
        info: DistInfo,
    ) -> None:
        if batch_size % info.world_size:
            raise ValueError(
                f"batch_size={batch_size} (global) is not divisible by the number of "
                f"processes ({info.world_size})"
            )
        self.batch_size = batch_size
        self.local_size = batch_size // info.world_size
        self.generator = generator
        self.info = info
        self.data = train_data
        self.sampler: EpochSampler | None = None
        is_list_of_examples = isinstance(train_data, list) and not all(
            isinstance(t, torch.Tensor) for t in train_data
        )
        if isinstance(train_data, Dataset) or is_list_of_examples or (
            hasattr(train_data, "__getitem__")
            and hasattr(train_data, "__len__")
            and not isinstance(train_data, (torch.Tensor, tuple, list, Mapping))
        ):
            self.kind = "dataset"
            n = len(train_data)
        elif isinstance(train_data, (torch.Tensor, tuple, list, Mapping)):
            self.kind = "tensors"
            n = self._check_tensors(train_data)
        elif callable(train_data):
            self.kind = "callable"
            return
        else:
            raise TypeError(
                "train_data must be tensors (tensor, tuple/list/dict of tensors), a "
                f"torch Dataset or a callable (step, generator) -> batch; got {type(train_data)}"
            )
        self.sampler = EpochSampler(n, generator)

    @staticmethod
    def _check_tensors(data: Any) -> int:
        leaves = (
            list(data.items()) if isinstance(data, Mapping)
            else [("", data)] if isinstance(data, torch.Tensor)
            else list(enumerate(data))
        )
        if not leaves:
            raise ValueError("train_data is an empty tuple/dict")
        sizes = {}
        for key, t in leaves:
            if not isinstance(t, torch.Tensor) or t.dim() == 0:
                raise TypeError(
                    f"train_data[{key!r}] must be a tensor with a first (example) dimension"
                )
            sizes[key] = t.shape[0]
        if len(set(sizes.values())) != 1:
            raise ValueError(f"train_data tensors differ in first dimension: {sizes}")
        return next(iter(sizes.values()))

    @property
    def epoch(self) -> int | None:
        """Epochs completed before the current one (None for on-the-fly data)."""
        return None if self.sampler is None else self.sampler.epoch

    def next_batch(self, step: int) -> Batch:
        """This rank's batch for update ``step`` (1-based)."""
        if self.sampler is None:
            batch = self.data(step, self.generator)
            return split_batch(batch, self.info)
        idx = self.sampler.next_indices(self.batch_size)
        r = self.info.rank
        idx = idx[r * self.local_size : (r + 1) * self.local_size]
        if self.kind == "dataset":
            return default_collate([self.data[int(i)] for i in idx])
        return _map_tensors(self.data, lambda t: t[idx])

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"kind": self.kind, "generator": self.generator.get_state()}
        if self.sampler is not None:
            state["sampler"] = self.sampler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["kind"] != self.kind:
            raise ValueError(
                f"checkpoint was made with train_data of kind {state['kind']!r}, "
                f"now it is {self.kind!r}"
            )
        if self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"])
        self.generator.set_state(state["generator"])
