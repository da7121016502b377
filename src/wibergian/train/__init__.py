"""The shared trainer: run folders, atomic checkpoints, exact resume, progress, DDP.

    from wibergian.train import Trainer, TrainConfig
    result = Trainer(model, loss_fn, train_data, TrainConfig(steps=200), run_dir="runs/x").fit()

See docs/training.md.
"""

from .checkpoint import CheckpointError, list_checkpoints, load_checkpoint, load_latest
from .config import TrainConfig, add_train_args, config_from_args, run_dir_from_args
from .finite import NonFiniteError
from .loop import Trainer, TrainResult, build_optimizer
from .schedule import lr_factor
from .seeding import seed_everything

__all__ = [
    "CheckpointError",
    "NonFiniteError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "add_train_args",
    "build_optimizer",
    "config_from_args",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest",
    "lr_factor",
    "run_dir_from_args",
    "seed_everything",
]
