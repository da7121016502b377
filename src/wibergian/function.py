"""The ``torch.autograd.Function`` glue between ``argmin`` and every PyTorch autodiff mode.

The maths lives in ``adjoint.py`` (``vjp``, ``jvp``) and ``second_order.py`` (``vjp_graph``); this
file only routes each mode to it:

- reverse mode (``backward``, ``torch.autograd.grad``, ``autograd.functional.jacobian``):
  ``ArgminFunction.backward`` → :func:`adjoint.vjp`;
- ``create_graph=True`` (double backward, ``autograd.functional.hessian``): the backward is
  built from differentiable ops, :func:`second_order.vjp_graph`;
- forward mode (``forward_ad`` dual numbers, ``torch.func.jvp``, ``jacfwd``):
  ``ArgminFunction.jvp`` → :func:`adjoint.jvp`;
- ``torch.func`` transforms (``grad``, ``vjp``, ``jacrev``, ``jacfwd``, ``vmap``): the solve runs
  inside ``ArgminFunction.forward`` on the unwrapped tensors (:class:`_Resolve`), and every
  ``vmap`` rule (of the solve, the VJP and the JVP) is a loop over the mapped dimension, since the
  solvers have data-dependent control flow;
- ``no_grad``: no graph; ``inference_mode``: the call runs outside inference mode on copies of its
  inputs (the solvers need autograd internally) and returns a tensor without history;
- ``torch.compile`` of a model containing ``argmin``: ``argmin`` is excluded from tracing (a
  graph break) and runs eagerly. A ``torch.compile``d *energy* is refused with a message: autograd
  cannot take the double backward of a compiled graph, which the Hessian needs.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from . import batch_cholesky
from .adjoint import AdjointSpec, jvp, vjp
from .second_order import vjp_graph

# set while argmin runs inside ArgminFunction.forward: the tail of argmin hands (spec, y_point)
# here instead of building its own graph
_CAPTURE: contextvars.ContextVar[list | None] = contextvars.ContextVar("wibergian_capture",
                                                                      default=None)


def _transforms_active() -> bool:
    """Whether a ``torch.func`` transform (grad, vjp, jvp, vmap, ...) is being traced."""
    active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(active()) if active is not None else False


def _loop_vmap(fn: Callable[..., Any], info: Any, in_dims: Sequence[Any], args: Sequence[Any]):
    """A ``vmap`` rule that calls ``fn`` once per mapped slice and stacks the outputs at dim 0."""
    outs = []
    for i in range(info.batch_size):
        sliced = [a.select(d, i) if isinstance(a, Tensor) and d is not None else a
                  for a, d in zip(args, in_dims, strict=True)]
        outs.append(fn(*sliced))
    if isinstance(outs[0], Tensor):
        return torch.stack(outs), 0
    return tuple(torch.stack(o) for o in zip(*outs, strict=True)), (0,) * len(outs[0])


class _Solved:
    """The plain path: argmin already solved; the function only attaches the derivatives."""

    def __init__(self, spec: AdjointSpec, y_star: Tensor, y_point: Tensor) -> None:
        self.spec, self.y_star, self.y_point = spec, y_star, y_point

    def __call__(self, y0: Tensor, params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        return self.y_star, self.y_point


class _Resolve:
    """Under ``torch.func``: run argmin on the unwrapped tensors inside the function's forward
    (once per ``vmap`` slice) and keep what the derivative rules need."""

    def __init__(self, impl: Callable[..., Any], energy: Any, options: dict[str, Any]) -> None:
        self.impl, self.energy, self.options = impl, energy, options
        self.spec: AdjointSpec | None = None
        self.infos: list[Any] = []

    def __call__(self, y0: Tensor, params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        captured: list = []
        token = _CAPTURE.set(captured)
        try:
            with torch.no_grad():
                y, info = self.impl(self.energy, y0.detach(), tuple(p.detach() for p in params),
                                    **{**self.options, "return_info": True})
        finally:
            _CAPTURE.reset(token)
        self.infos.append(info)
        if not captured:  # an empty batch: nothing to differentiate
            self.spec = None
            return y, y
        spec, y_point = captured[0]
        # one spec serves every vmap slice: what the forward kept of its linear algebra (a
        # Cholesky factor, a Hessian, its certificate) belongs to one slice only
        per_slice = {f.name: None for f in dataclasses.fields(spec)
                     if f.name in ("factor", "hessian", "psd")}
        self.spec = dataclasses.replace(spec, **per_slice)
        return y, y_point

    def info(self) -> Any:
        """The call's ``ArgminInfo``; under ``vmap``, tensors stacked over the mapped dim."""
        if len(self.infos) == 1:
            return self.infos[0]
        first = self.infos[0]
        merged = {}
        for f in dataclasses.fields(first):
            vals = [getattr(i, f.name) for i in self.infos]
            if isinstance(vals[0], Tensor):
                merged[f.name] = torch.stack(vals)
            elif isinstance(vals[0], int) and not isinstance(vals[0], bool):
                merged[f.name] = sum(vals)
            elif f.name == "backward":
                merged[f.name] = {"slices": vals}
            else:
                merged[f.name] = vals[0]
        return type(first)(**merged)


class ArgminFunction(torch.autograd.Function):
    """``apply(solve, y0, *params) -> (y*, y_point)``: ``solve(y0, params)`` gives the solution
    and the point the derivatives linearise at (``y*``, or the pre-step point for
    ``adjoint="newton_step"``); ``y_point`` is returned non-differentiable so it can be saved."""

    @staticmethod
    def forward(solve: Any, y0: Tensor, *params: Tensor) -> tuple[Tensor, Tensor]:
        y_star, y_point = solve(y0, params)
        return y_star.detach().clone(), y_point.detach().clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        solve, _, *params = inputs
        ctx.spec = solve.spec
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1], *params)  # not y* itself: it may be edited in place
        ctx.save_for_forward(output[1], *params)

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor, _grad_point: Tensor | None) -> tuple:
        y_point, *params = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[2:])
        spec: AdjointSpec | None = ctx.spec
        if spec is None or not any(needs):
            return (None, None, *[torch.zeros_like(p) if n else None
                                  for p, n in zip(params, needs, strict=True)])
        try:
            # a graph of the backward is wanted (create_graph=True) and the parameters carry one
            # (torch.func's vjp_fn also runs with grad enabled, on tensors of an exited level:
            # those say requires_grad, but a view of them does not)
            graph = torch.is_grad_enabled() and not _transforms_active() and any(
                p.view_as(p).requires_grad for p, n in zip(params, needs, strict=True) if n)
            if graph and spec.regulariser == "ridge":
                # create_graph=True: y* re-attached to w by this same rule, so second-order
                # terms see argmin's derivative (the pre-step point is fixed for newton_step)
                point = (ArgminFunction.apply(_Solved(spec, y_point, y_point), y_point, *params)[0]
                         if spec.mode == "implicit" else y_point)
                return (None, None, *vjp_graph(spec, point, params, grad_y))
            grads = iter(_VJP.apply(spec, needs, y_point, grad_y, *params))
        except RuntimeError as err:
            if "Batching rule not implemented" in str(err):
                raise RuntimeError(_BATCHED) from err
            raise
        return (None, None, *[next(grads) if n else None for n in needs])

    @staticmethod
    def jvp(ctx: Any, _solve_t: Any, _y0_t: Tensor | None, *tangents: Tensor | None) -> tuple:
        y_point, *params = ctx.saved_tensors
        spec: AdjointSpec | None = ctx.spec
        if spec is None or all(t is None for t in tangents):
            return torch.zeros_like(y_point), None
        return _JVP.apply(spec, len(params), y_point, *params, *tangents), None

    @staticmethod
    def vmap(info: Any, in_dims: tuple, solve: Any, y0: Tensor, *params: Tensor) -> tuple:
        return _loop_vmap(lambda *a: ArgminFunction.apply(*a), info, in_dims,
                          (solve, y0, *params))


_NESTED = (
    "{} through argmin inside torch.func transforms is not supported (argmin's derivative rules "
    "are not themselves differentiable there). For second derivatives use torch.autograd: "
    "torch.autograd.grad(..., create_graph=True) or torch.autograd.functional.hessian."
)


_BATCHED = (
    "argmin: batched cotangents from torch.autograd.grad(..., is_grads_batched=True) or "
    "torch.autograd.functional.jacobian(..., vectorize=True) are not supported (that legacy "
    "vmap cannot run argmin's solves). Use vectorize=False, torch.func.jacrev (supported), or "
    "wibergian.argmin_jacobian."
)
_FLOOR = (
    "second derivatives through argmin (create_graph=True) support regulariser='ridge' only: "
    "the eigenvalue floor has no simple derivative; use regulariser='ridge' for a Hessian"
)


def _compiled_energy(energy: Any) -> Any:
    """``energy`` if it is ``compile=True``'s wrapper, else ``None``: the backward then factors
    with the batch kernels while it runs compiled, as its forward did
    (``batch_cholesky.active``)."""
    from .compiled import CompiledEnergy

    return energy if isinstance(energy, CompiledEnergy) else None


class _VJP(torch.autograd.Function):
    """The VJP as an op of its own, so that ``vmap`` over cotangents (``jacrev``,
    ``is_grads_batched``) has a rule: a loop."""

    @staticmethod
    def forward(spec: AdjointSpec, needs: tuple, y_point: Tensor, grad_y: Tensor,
                *params: Tensor) -> tuple[Tensor, ...]:
        marked = [p.detach().requires_grad_(True) if n and p.is_floating_point() else p.detach()
                  for p, n in zip(params, needs, strict=True)]
        with batch_cholesky.active(_compiled_energy(spec.energy)):
            grads = vjp(spec, y_point, marked, grad_y)
        return tuple(g if g is not None else torch.zeros_like(p)
                     for g, p, n in zip(grads, params, needs, strict=True) if n)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        ctx.regulariser = inputs[0].regulariser

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple:
        if ctx.regulariser != "ridge" and not _transforms_active():
            raise NotImplementedError(_FLOOR)
        raise RuntimeError(_NESTED.format("A second reverse-mode derivative"))

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> tuple:
        raise RuntimeError(_NESTED.format("Forward-over-reverse differentiation"))

    @staticmethod
    def vmap(info: Any, in_dims: tuple, *args: Any) -> tuple:
        return _loop_vmap(lambda *a: _VJP.apply(*a), info, in_dims, args)


class _JVP(torch.autograd.Function):
    """The JVP as an op of its own (``vmap`` over tangents is ``jacfwd``): ``apply(spec, k,
    y_point, *params, *tangents)`` with ``k`` parameters."""

    @staticmethod
    def forward(spec: AdjointSpec, k: int, y_point: Tensor, *rest: Any) -> Tensor:
        params, tangents = rest[:k], rest[k:]
        return jvp(spec, y_point, [p.detach() for p in params],
                   [None if t is None else t.detach() for t in tangents])

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple:
        raise RuntimeError(_NESTED.format("Reverse-over-forward differentiation"))

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> Tensor:
        raise RuntimeError(_NESTED.format("A second forward-mode derivative"))

    @staticmethod
    def vmap(info: Any, in_dims: tuple, *args: Any) -> tuple:
        return _loop_vmap(lambda *a: _JVP.apply(*a), info, in_dims, args)


def attach_derivatives(spec: AdjointSpec, y_star: Tensor, y_point: Tensor, y0: Tensor,
                       params: Sequence[Tensor]) -> Tensor:
    """The tail of ``argmin``: ``y*`` with every autodiff mode's rule attached."""
    captured = _CAPTURE.get()
    if captured is not None:  # inside ArgminFunction.forward (torch.func): it differentiates
        captured.append((spec, y_point))
        return y_star.clone()
    y, _ = ArgminFunction.apply(_Solved(spec, y_star, y_point), y0, *params)
    return y


_COMPILED = (
    "the energy is a torch.compile'd function or module: autograd cannot take the double "
    "backward of a compiled graph, which argmin needs for the Hessian. Pass the plain "
    "(uncompiled) energy{}, or declare closed-form gradient/hessian on the energy (see "
    "wibergian.energy)."
)
_COMPILE_OPTION = " with argmin(..., compile=True), which compiles the derivative functions instead"


def _is_compiled(energy: Any) -> bool:
    return hasattr(energy, "_torchdynamo_orig_callable") or hasattr(energy, "_orig_mod")


def autodiff_entry(impl: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``argmin``'s implementation so it runs where its internal autograd works:
    outside ``inference_mode``, on unwrapped tensors under ``torch.func``, never traced by
    ``torch.compile``."""

    @functools.wraps(impl)
    def argmin(energy: Any, y0: Any, params: Any = (), **options: Any) -> Any:
        if _is_compiled(energy):
            raise TypeError(f"argmin: {compiled}")
        if isinstance(params, Tensor):
            params = (params,)
        if torch.is_inference_mode_enabled():
            with torch.inference_mode(False), torch.no_grad():
                copy = (lambda t: t.detach().clone() if isinstance(t, Tensor) else t)  # noqa: E731
                params = tuple(copy(p) for p in params) if isinstance(params, (tuple, list)) \
                    else params
                return impl(energy, copy(y0), params, **options)
        if _transforms_active() and isinstance(y0, Tensor) and isinstance(params, (tuple, list)):
            resolve = _Resolve(impl, energy, options)
            y, _ = ArgminFunction.apply(resolve, y0, *params)
            return (y, resolve.info()) if options.get("return_info") else y
        try:
            return impl(energy, y0, params, **options)
        except RuntimeError as err:
            if "does not currently support double backward" in str(err):
                raise RuntimeError(f"argmin: part of {compiled}") from err
            raise

    disabled: list[Callable[..., Any]] = []
    compiled = _COMPILED.format(
        _COMPILE_OPTION if "compile" in inspect.signature(impl).parameters else "")

    @functools.wraps(impl)
    def entry(*args: Any, **kwargs: Any) -> Any:
        # never traced by torch.compile (its pieces would be compiled, and autograd cannot take
        # the double backward of a compiled graph). Dynamo is imported lazily: importing it
        # here would add seconds to `import wibergian`, and without it nothing is compiling.
        if "torch._dynamo" not in sys.modules:
            return argmin(*args, **kwargs)
        if not disabled:
            disabled.append(torch.compiler.disable(argmin))
        return disabled[0](*args, **kwargs)

    return entry
