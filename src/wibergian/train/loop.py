"""The training loop: `Trainer(model, loss_fn, train_data, cfg, run_dir, resume, eval_fn).fit()`.

One update s (counted from 1):

1. this rank's share of the global batch (`sampling.BatchSource`), moved to the device;
2. learning rate = base rate x `schedule.lr_factor(cfg, s)`;
3. ``loss, metrics = loss_fn(model, batch)`` through ``DistributedDataParallel`` when running
   under torchrun. ``loss`` must be the *mean* over this rank's examples; with equal local batch
   sizes b = G / K, DDP's gradient average (1/K) sum_r grad(mean_r) equals the gradient of the
   mean over the global batch G, so K processes follow the same trajectory as one;
4. loss and metrics are averaged over ranks; a non-finite loss stops here (`NonFiniteError`);
5. backward; a non-finite gradient (after DDP's all-reduce, identical on all ranks) stops;
6. optional clipping of the global gradient norm, optimiser step;
7. log record every ``log_every`` updates (means over the window), eval every ``eval_every``,
   checkpoint every ``checkpoint_every`` (parameters checked finite first), both also at the end;
8. after a SIGTERM/SIGINT (`signals.GracefulStop`, flag averaged over ranks with the loss):
   checkpoint this update and return with ``stop_reason="interrupted"``.

What a checkpoint holds and how a run resumes: ``resume.py``; the checks of ``loss_fn``'s output
and of the gradient (steps 3-5): ``checks.py``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed as D
from . import faults
from .averaging import averaged_weights, load_average, make_asgd
from .checks import as_float, check_loss_output, global_grad_norm
from .config import TrainConfig
from .finite import NonFiniteError, describe, first_nonfinite
from .orphan import launched_by_torchrun, watch_parent
from .progress import Progress
from .resume import load_latest, restore, run_environment, snapshot, write_checkpoint
from .rundir import RunDir, dumps
from .sampling import BatchSource, move_to
from .schedule import lr_factor
from .seeding import data_generator, seed_everything
from .signals import GracefulStop

LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]
EvalFn = Callable[[nn.Module], dict[str, float]]


@dataclass
class TrainResult:
    """What `Trainer.fit` returns.

    ``stop_reason``: "completed" (all steps done in this call), "already_complete" (resumed
    a run whose last checkpoint is the final step) or "interrupted" (SIGTERM/SIGINT: the state
    after ``steps_done`` updates is checkpointed; resume to continue). ``final_loss`` is the
    global loss of the last update; ``history`` holds every log and eval record (as in
    metrics.jsonl).
    """

    steps_done: int
    final_loss: float | None
    history: list[dict[str, Any]]
    run_dir: Path | None
    stop_reason: str
    final_eval: dict[str, float] | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    last_checkpoint: Path | None = None
    world_size: int = 1


class _LossModule(nn.Module):
    """Wraps model + loss so that DDP sees the whole forward while ``loss_fn`` still receives
    the bare model (with all its attributes)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss_fn(self.model, batch)


def build_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD(momentum) / averaged SGD over ``params`` at ``cfg.lr``.

    ``"asgd"``: SGD at the scheduled rate (momentum ``cfg.momentum``, 0 for plain averaged
    SGD) plus the running mean of the iterates (`averaging.AveragedSGD`); evaluation and the
    model returned by ``fit`` use the average.
    """
    if not params:
        raise ValueError("the model has no parameters that require grad")
    if cfg.optimizer == "asgd":
        return make_asgd(params, cfg.lr, cfg.weight_decay, cfg.momentum)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


class Trainer:
    """The shared training loop (see the module docstring for one update).

    Parameters
    ----------
    model: the module to train, in place (moved to the device).
    loss_fn: ``(model, batch) -> (loss, metrics)``; loss a scalar tensor, the mean over the
        batch; metrics a dict of numbers (means over the batch), logged and averaged over ranks.
    train_data: tensors, a Dataset or a callable ``(step, generator) -> batch`` (see sampling.py).
    config: `TrainConfig`.
    run_dir: the run folder (None: write nothing, no checkpoints).
    resume: continue from the newest checkpoint in ``run_dir`` (start fresh if there is none).
    eval_fn: ``model -> dict of numbers``, run on rank 0 in ``model.eval()`` mode every
        ``eval_every`` updates and at the end (it is not wrapped in ``no_grad``: argmin layers
        may need autograd inside their forward).
    optimizer: a ready optimiser over the model's parameters instead of ``config.optimizer``.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        train_data: Any,
        config: TrainConfig,
        run_dir: str | Path | None = None,
        resume: bool = False,
        eval_fn: EvalFn | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable (model, batch) -> (loss, metrics)")
        config.validate()
        self.model = model
        self.loss_fn = loss_fn
        self.train_data = train_data
        self.config = config
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.resume = resume
        self.eval_fn = eval_fn
        self._optimizer = optimizer
        self._opt: torch.optim.Optimizer | None = None
        self._run: RunDir | None = None

    # ------------------------------------------------------------------ driver
    def fit(self) -> TrainResult:
        """Train to ``config.steps`` updates (or stop with `NonFiniteError`)."""
        if launched_by_torchrun():
            watch_parent()  # stop (checkpoint first) if torchrun dies: see orphan.py
        info = D.setup(self.config.backend)
        prev_det = torch.are_deterministic_algorithms_enabled()
        prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        try:
            if self.config.deterministic:
                # cuBLAS needs this for reproducible matrix products on CUDA
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.use_deterministic_algorithms(True, warn_only=True)
            result = self._fit(info)
            D.finish(info)  # every process done before any tears the group down
            return result
        finally:
            if self._run is not None:
                self._run.release_lock()
                self._run = None
            torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
            D.teardown(info)

    def _fit(self, info: D.DistInfo) -> TrainResult:
        cfg = self.config
        cfg_dict = json.loads(dumps(cfg.to_dict()))
        device = D.resolve_device(cfg.device, info)
        seed_everything(cfg.seed, info.rank)
        model = self.model.to(device)
        model.train()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        opt = self._optimizer or build_optimizer(cfg, [p for _, p in named])
        self._opt = opt
        base_lrs = [g["lr"] for g in opt.param_groups]
        source = BatchSource(self.train_data, cfg.batch_size, data_generator(cfg.seed), info)
        run = RunDir(self.run_dir, enabled=info.is_main)
        self._run = run

        pids = D.all_gather_object(os.getpid(), info)  # the lock names every writer
        D.on_main(lambda: run.prepare(self.resume, pids), info)
        state = None
        if self.resume and self.run_dir is not None:
            state = D.on_main(lambda: load_latest(run), info)

        start, history, window, elapsed0, last_loss, last_metrics, last_path = restore(
            state, cfg_dict, model, opt, source, info, run, self.run_dir)

        run.write_json("config.json", cfg_dict)
        run.write_json("env.json", run_environment(info, device, start))
        run.start_tensorboard(purge_step=start + 1 if start else None)

        mode = "off" if (cfg.quiet or not info.is_main) else "auto"
        progress = Progress(cfg.steps, start, mode)
        if state is not None:
            progress.message(f"resumed {self.run_dir} at step {start}")

        module: nn.Module = _LossModule(model, self.loss_fn)
        if info.is_distributed:
            module = nn.parallel.DistributedDataParallel(
                module,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters,
            )

        t0 = time.perf_counter() - elapsed0
        final_eval = next((
            {k: v for k, v in r.items() if k not in ("step", "split", "wall")}
            for r in reversed(history) if r.get("split") == "eval" and r["step"] == cfg.steps
        ), None)
        step = start
        stop_now = False
        stopper = GracefulStop()
        try:
            stopper.__enter__()
            for step in range(start + 1, cfg.steps + 1):
                batch = move_to(source.next_batch(step), device)
                factor = lr_factor(cfg, step)
                for g, base in zip(opt.param_groups, base_lrs, strict=True):
                    g["lr"] = base * factor
                out = module(batch)
                loss, metrics = check_loss_output(out)
                names = sorted(metrics)
                local = torch.tensor(
                    [as_float(loss, "loss")] + [as_float(metrics[k], f"metric {k!r}")
                                                 for k in names] + [float(stopper.requested)],
                    dtype=torch.float64, device=device,
                )
                values = D.all_reduce_mean(local, info).tolist()
                stop_now = values.pop() > 0  # a stop signal reached some process
                if not math.isfinite(values[0]):
                    raise NonFiniteError(step, "loss", describe(torch.tensor(values[0])),
                                         last_path)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = global_grad_norm(named, step, last_path)
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_([p for _, p in named], cfg.grad_clip)
                opt.step()

                last_loss = values[0]
                last_metrics = dict(zip(names, values[1:], strict=True))
                window.add({"loss": last_loss, **last_metrics, "grad_norm": grad_norm})
                progress.update()
                if step % cfg.log_every == 0 or step == cfg.steps:
                    record = {"step": step, "split": "train", **window.flush(),
                              "lr": opt.param_groups[0]["lr"]}
                    if source.epoch is not None:
                        record["epoch"] = source.epoch
                    record["wall"] = round(time.perf_counter() - t0, 3)
                    history.append(record)
                    run.log(record)
                    progress.record(record)
                faults.after_step(step)

                if self.eval_fn is not None and (
                    step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0)
                ):
                    final_eval = self._evaluate(model, info)
                    record = {"step": step, "split": "eval", **final_eval,
                              "wall": round(time.perf_counter() - t0, 3)}
                    history.append(record)
                    run.log(record)
                    progress.record(record)

                if stop_now or step == cfg.steps or (
                    cfg.checkpoint_every and step % cfg.checkpoint_every == 0
                ):
                    bad = first_nonfinite((n, p.detach()) for n, p in named)
                    if bad is not None:
                        raise NonFiniteError(step, f"parameter {bad[0]!r}", describe(bad[1]),
                                             last_path)
                    saved = snapshot(step, model, opt, source, cfg_dict, history, window, t0,
                                     last_loss, last_metrics, info)
                    last_path = write_checkpoint(run, saved, cfg.keep_checkpoints) or last_path
                if stop_now and step < cfg.steps:
                    progress.message(f"stop signal: checkpointed step {step} and stopped; "
                                     "resume to continue")
                    break
            else:
                stop_now = False
        except NonFiniteError as err:
            progress.message(str(err))
            run.write_json("results.json", {
                "stop_reason": "non_finite", "step": err.step, "quantity": err.quantity,
                "message": str(err), "steps_done": err.step - 1,
                "last_checkpoint": last_path, "world_size": info.world_size,
            })
            raise
        finally:
            stopper.__exit__()
            progress.close()
            run.close()

        if stop_now:
            stop, done = "interrupted", step
        else:
            stop, done = ("completed" if start < cfg.steps else "already_complete"), cfg.steps
        wall = time.perf_counter() - t0
        load_average(opt)  # averaged SGD: the model returned (and saved) is the average
        run.save_model(model.state_dict())
        run.write_json("results.json", {
            "stop_reason": stop, "steps_done": done, "final_loss": last_loss,
            "final_metrics": last_metrics, "final_eval": final_eval,
            "last_checkpoint": last_path, "world_size": info.world_size,
            "wall_seconds": round(wall, 3),
        })
        if cfg.plot:
            run.plot(history)
        return TrainResult(
            steps_done=done, final_loss=last_loss, history=history, run_dir=self.run_dir,
            stop_reason=stop, final_eval=final_eval, final_metrics=last_metrics,
            last_checkpoint=last_path, world_size=info.world_size,
        )

    # ------------------------------------------------------------------ pieces
    def _evaluate(self, model: nn.Module, info: D.DistInfo) -> dict[str, float]:
        assert self.eval_fn is not None
        eval_fn = self.eval_fn

        def run() -> dict[str, float]:
            model.eval()
            try:
                with averaged_weights(self._opt):
                    out = eval_fn(model)
            finally:
                model.train()
            if not isinstance(out, dict):
                raise TypeError(f"eval_fn must return a dict, got {type(out).__name__}")
            return {str(k): as_float(v, f"eval_fn value {k!r}") for k, v in out.items()}

        return D.on_main(run, info)
