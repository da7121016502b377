"""``wibergian ransac``: the MLESAC toy from the command line, and its ``reproduce`` section."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from wibergian.argtypes import positive_float, positive_int

from .run import RansacConfig, markdown_table, run_experiment, run_sweep, sweep_table

DEFAULT = RansacConfig()
SWEEP_LRS = (1e-5, 1e-4, 1e-3, 3e-3, 1e-2)
SWEEP_MOMENTA = (0.9, 0.99, 0.999)
#: The smaller sweep of the full ``reproduce`` (the paper's momentum; runs are independent, so
#: its rows equal the matching rows of ``wibergian ransac --sweep --seeds 5``).
REPRODUCE_SWEEP_LRS = (1e-4, 1e-3, 3e-3, 1e-2)
REPRODUCE_SWEEP_MOMENTA = (0.999,)
#: Environment variables overriding ``reproduce --quick``'s updates and test-set size (tests).
QUICK_STEPS_ENV = "WIBERGIAN_RANSAC_QUICK_STEPS"
QUICK_NTEST_ENV = "WIBERGIAN_RANSAC_QUICK_NTEST"




def _momentum(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"momentum must be in [0, 1), got {v}")
    return v


def _float_list(kind):
    def parse(text: str) -> list[float]:
        return [kind(p) for p in text.split(",") if p.strip()]
    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``ransac`` sub-command."""
    p = subparsers.add_parser(
        "ransac",
        help="MLESAC toy (paper Fig. 2): learn σ with damped vs plain implicit gradients",
        description=(
            "Learn the kernel width σ of E(t) = Σ -exp(-(x_i - t)²/σ²) so that its minimiser "
            "(started from the best data point) estimates the mean of 10 inliers among 100 "
            "outliers (generated data, a fresh sample each update), by SGD with momentum. "
            "Runs the damped gradient (λ = --damping) and plain implicit differentiation "
            "(λ = 0) over --seeds seeds and writes DIR/ransac.json, ransac_sigma.png and "
            "ransac_energy.png. With --sweep, runs both methods over a grid of step sizes and "
            "momenta instead and writes ransac_sweep.json / .png."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--seeds", type=positive_int, default=DEFAULT.seeds,
                   help="independent runs per method")
    p.add_argument("--steps", type=positive_int, default=DEFAULT.steps,
                   help="SGD updates per run")
    p.add_argument("--lr", type=positive_float, default=DEFAULT.lr, help="SGD step size")
    p.add_argument("--optimizer", choices=("sgd", "asgd"), default=DEFAULT.optimizer,
                   help="'sgd': SGD with --momentum; 'asgd': averaged SGD (plain SGD steps, "
                        "evaluated with the running average of σ; the paper authors' optimiser, "
                        "e.g. --optimizer asgd --lr 0.5)")
    p.add_argument("--momentum", type=_momentum, default=None,
                   help=f"SGD momentum (default {DEFAULT.momentum:g}, the paper's, with sgd; "
                        "0 with asgd, which has none)")
    p.add_argument("--sigma0", type=positive_float, default=DEFAULT.sigma0,
                   help="initial kernel width σ")
    p.add_argument("--per-seed", type=positive_int, default=DEFAULT.per_seed,
                   help="fresh problems per update and seed (paper: 1)")
    p.add_argument("--damping", type=positive_float, default=DEFAULT.damping,
                   help="λ of the damped method (the undamped one uses 0)")
    p.add_argument("--sigma-max", type=positive_float, default=DEFAULT.sigma_max,
                   help="a run has diverged once |σ| exceeds this (or is not finite)")
    p.add_argument("--n-test", type=positive_int, default=DEFAULT.n_test,
                   help="held-out generated problems for test_mse")
    p.add_argument("--engine", choices=("batched", "trainer"), default=DEFAULT.engine,
                   help="'batched': all seeds in one argmin per update; 'trainer': one seed at "
                        "a time through wibergian.train.Trainer (same numbers, slower)")
    p.add_argument("--sweep", action="store_true",
                   help="run the step-size x momentum sweep instead of one setting")
    p.add_argument("--sweep-lr", type=_float_list(positive_float), default=list(SWEEP_LRS),
                   metavar="LR,LR,...", help="step sizes of --sweep")
    p.add_argument("--sweep-momentum", type=_float_list(_momentum),
                   default=list(SWEEP_MOMENTA), metavar="M,M,...", help="momenta of --sweep")
    p.add_argument("--out", type=Path, default=Path("runs/ransac"), help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from wibergian.cli import UsageError, prepare_out_dir

    momentum = args.momentum
    if momentum is None:
        momentum = 0.0 if args.optimizer == "asgd" else DEFAULT.momentum
    elif args.optimizer == "asgd" and momentum != 0:
        raise UsageError(f"--optimizer asgd has no momentum; drop --momentum {momentum:g}")
    if args.sweep and args.optimizer != "sgd":
        raise UsageError("--sweep varies the SGD momentum; run it with --optimizer sgd")
    out = prepare_out_dir(args.out)
    cfg = RansacConfig(seeds=args.seeds, steps=args.steps, lr=args.lr, momentum=momentum,
                       optimizer=args.optimizer,
                       sigma0=args.sigma0, per_seed=args.per_seed, damping=args.damping,
                       sigma_max=args.sigma_max, n_test=args.n_test, engine=args.engine)
    if args.sweep:
        sweep = run_sweep(cfg, args.sweep_lr, args.sweep_momentum, out, args.quiet)
        print(sweep_table(sweep))
        print(f"wrote {out / 'ransac_sweep.json'} and ransac_sweep.png")
        return 0
    result = run_experiment(cfg, out, args.quiet)
    print(markdown_table(result))
    pd = result["paired_difference"]
    if pd.get("ci95"):
        print(f"paired test MSE damped - undamped: {pd['mean']:+.2f}, 95 % CI "
              f"[{pd['ci95'][0]:+.2f}, {pd['ci95'][1]:+.2f}] over {pd['n']} seeds "
              f"(held-out: {cfg.n_test} generated problems)")
    print(f"wrote {out / 'ransac.json'}, " + ", ".join(result["figures"]))
    return 0


def _config(quick: bool) -> RansacConfig:
    if not quick:
        return RansacConfig()
    steps = int(os.environ.get(QUICK_STEPS_ENV, "800"))
    n_test = int(os.environ.get(QUICK_NTEST_ENV, "1000"))
    return RansacConfig(seeds=4, steps=steps, n_test=n_test)


def reproduce(out_dir: Path, quick: bool, quiet: bool = False) -> str:
    """Run the toy on generated data; returns the report's markdown section.

    Full: the default setting (docs/ransac.md) plus a sweep over the step size at momentum
    0.999 with 5 seeds (the whole grid: ``wibergian ransac --sweep``).
    Quick: 4 seeds x 800 updates, no sweep (``WIBERGIAN_RANSAC_QUICK_STEPS`` overrides 800).
    """
    cfg = _config(quick)
    res = run_experiment(cfg, out_dir, quiet)
    c = res["config"]
    parts = [
        "## MLESAC toy (paper Fig. 2)",
        "",
        "**Data: generated** — each update draws a fresh problem per seed: 10 inliers "
        "~ N(U[-40, 40], 4²) among 100 outliers ~ U[-40, 40]; target = inlier mean. "
        f"Held-out: {c['n_test']} generated problems.",
        "",
        f"Settings: {c['seeds']} seeds x {c['steps']} updates, SGD lr = {c['lr']:g}, "
        f"momentum = {c['momentum']:g}, initial σ = {c['sigma0']:g}, "
        f"{c['per_seed']} problem(s) per update; diverged = {res['divergence_rule']}."
        + (" *Quick mode: short runs, numbers are indicative only.*" if quick else ""),
        "",
        markdown_table(res),
        "",
        _paired_line(res),
        "",
        "![σ over the updates](ransac_sigma.png)",
        "",
        "![energy of one held-out sample](ransac_energy.png)",
        "",
    ]
    if not quick:
        sweep_cfg = RansacConfig(seeds=5)
        sweep = run_sweep(sweep_cfg, list(REPRODUCE_SWEEP_LRS), list(REPRODUCE_SWEEP_MOMENTA),
                          out_dir, quiet)
        parts += [
            f"### Sweep over the step size ({sweep_cfg.seeds} seeds each, "
            f"{sweep_cfg.steps} updates, initial σ = {sweep_cfg.sigma0:g}; generated data)",
            "",
            sweep_table(sweep),
            "",
            "![sweep](ransac_sweep.png)",
            "",
        ]
    return "\n".join(parts)


def _paired_line(res: dict) -> str:
    pd = res["paired_difference"]
    if not pd.get("ci95"):
        return "Paired difference damped − undamped: not enough finished seeds."
    return (f"Paired over seeds, test MSE damped − undamped: {pd['mean']:+.2f}, 95 % CI "
            f"[{pd['ci95'][0]:+.2f}, {pd['ci95'][1]:+.2f}] (n = {pd['n']}; damped lower on "
            f"{pd['damped_better']}, undamped lower on {pd['undamped_better']}).")
