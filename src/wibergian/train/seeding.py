"""Seeds and random-number-generator states (torch, CUDA, numpy, python).

Seeds are derived from the run seed with `numpy.random.SeedSequence`, one independent stream per
purpose and per process, so that rank 1 does not replay rank 0's dropout masks and the data
order does not depend on how many random numbers the model consumed.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

#: Purposes of derived seeds (the second SeedSequence key).
GLOBAL_RNG = 0
DATA_RNG = 1


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream ``(seed, *keys)``; different keys give independent streams."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and CUDA) for ``rank``.

    Call it before building a model so that initial parameters are reproducible; the trainer
    calls it again at the start of `Trainer.fit`.
    """
    s = derive_seed(seed, GLOBAL_RNG, rank)
    random.seed(s)
    np.random.seed(s % 2**32)  # noqa: NPY002 - the legacy global state is what users' code draws from
    torch.manual_seed(s)


def data_generator(seed: int) -> torch.Generator:
    """The trainer's own CPU generator for data order / on-the-fly data (same on every rank)."""
    return torch.Generator().manual_seed(derive_seed(seed, DATA_RNG))


def capture_rng() -> dict[str, Any]:
    """The current global RNG states as tensors/ints (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
