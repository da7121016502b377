"""Process-group setup and the few collectives the trainer needs (torch.distributed).

``torchrun`` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; when WORLD_SIZE > 1
and no process group exists yet, `setup` creates one (gloo on CPU, nccl when CUDA is present)
and `teardown` destroys it again. A process group created by the caller is used as it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global ``rank`` of ``world_size``, GPU index ``local_rank``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    created: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from exc


def setup(backend: str | None = None) -> DistInfo:
    """Join (or create) the default process group when launched by torchrun."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=_env_int("LOCAL_RANK", 0),
            backend=str(dist.get_backend()),
            created=False,
        )
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
    local_rank = _env_int("LOCAL_RANK", 0)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError("backend 'nccl' needs CUDA; use 'gloo' on CPU")
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        backend=backend,
        created=True,
    )


def finish(info: DistInfo) -> None:
    """Wait until every process has finished its work (a barrier; nothing when not
    distributed). Called after a successful run, before any process may destroy the group: a
    gloo group torn down while a peer is still exiting its last collective can abort that peer
    ("terminate called without an active exception"). Not called after an error, where a peer
    may never arrive."""
    if info.is_distributed and dist.is_initialized():
        dist.barrier()


def teardown(info: DistInfo) -> None:
    """Destroy the process group if `setup` created it."""
    if info.created and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(device: str, info: DistInfo) -> torch.device:
    """``auto``: ``cuda:LOCAL_RANK`` when CUDA is available (and the backend allows), else CPU."""
    if device == "auto":
        use_cuda = torch.cuda.is_available() and info.backend in (None, "nccl")
        return torch.device(f"cuda:{info.local_rank}" if use_cuda else "cpu")
    if device == "cuda" and info.is_distributed:
        return torch.device(f"cuda:{info.local_rank}")
    return torch.device(device)


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``t`` over processes (``t`` itself when not distributed)."""
    if not info.is_distributed:
        return t
    out = t.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def broadcast_object(obj: T | None, info: DistInfo, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (pickled)."""
    if not info.is_distributed:
        return obj  # type: ignore[return-value]
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]  # type: ignore[return-value]


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, indexed by rank."""
    if not info.is_distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def on_main(fn: Callable[[], T], info: DistInfo) -> T:
    """Run ``fn`` on rank 0 only and hand its result (or its failure) to every rank.

    An exception on rank 0 is re-raised there and raised as ``RuntimeError`` with the same
    message on the other ranks, so no rank is left waiting in a collective.
    """
    if not info.is_distributed:
        return fn()
    result: Any = None
    error: BaseException | None = None
    if info.is_main:
        try:
            result = fn()
        except Exception as exc:  # re-raised below, on every rank
            error = exc
    payload = broadcast_object(
        (result, None if error is None else f"{type(error).__name__}: {error}"), info
    )
    if error is not None:
        raise error
    if payload[1] is not None:
        raise RuntimeError(f"rank 0 failed: {payload[1]}")
    return payload[0]
