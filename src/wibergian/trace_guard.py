"""A fingerprint of the Python state an energy can read (the guard of ``compile=True``).

``compile=True`` traces the energy once (``make_fx``, fake tensors): every Python value it reads
that is not an argument (a closure float, a module-level global, ``self.sigma`` of a callable
object, a ``functools.partial`` keyword, a Python number read from a tensor by ``.item()``) is
baked into the graph as a constant. :func:`describe` walks what the energy can read and returns a
:class:`State` whose ``key`` compares equal exactly when none of it changed (as far as the walk
sees, below); ``retrace.py`` re-traces when it does not (like ``jax.jit`` re-tracing on a new
static argument, but from the closure instead of the arguments).

What is walked, from the energy:

- a Python function: its code object, closure cells, defaults and keyword defaults, and the
  globals its code (and the code nested in it: lambdas, comprehensions, inner functions) loads
  by name; a user module read that way (``import config; config.SIGMA``) is walked for the
  attribute names the code uses. User functions reached are walked in turn, up to
  :data:`MAX_DEPTH` levels;
- ``functools.partial`` (function, arguments, keywords); a bound method (``__self__`` and
  ``__func__``); an object of a user class (the class's functions and class attributes, its
  bases, and the instance's ``__dict__`` / ``__slots__``): a callable object's ``__call__`` and
  ``self.sigma`` are covered; ``torch.nn.Module`` (parameters, buffers, ``training`` and the other
  attributes, submodules recursively: all in its ``__dict__``; empty hook dicts skipped);
  ``types.SimpleNamespace`` and ``argparse.Namespace`` like objects of a user class;
- values: ``None``/bool/int/float/complex/str/bytes, ``torch.dtype``/``device``/``Size``,
  ranges and slices by value; enums, classes and functions of libraries by identity; tuples,
  lists, dicts, sets by content (at most :data:`LIMIT` entries each); tensors by
  ``(identity, _version, shape, dtype, device)`` (never their data: no copy); numpy arrays of at
  most :data:`LIMIT` elements by value.

Modules and functions of libraries (the standard library, torch, numpy, …, :data:`LIBRARIES`, and
every package installed in site-packages except ``wibergian``) are identities: their internal
state is not walked (documented limit; the value check of ``retrace.py`` is the second line of
defence). Objects of a library type are identities too (a ``torch.Generator``, an
``OpOverload``). The energy itself is always walked, wherever it is defined. What the walk
cannot describe honestly (a container or array over :data:`LIMIT`, more than :data:`BUDGET`
nodes, user functions nested deeper than :data:`MAX_DEPTH`, a generator or iterator, an object
of a user class with neither ``__dict__`` nor ``__slots__``) raises :class:`Undescribable`;
``retrace.py`` then runs that energy eagerly (one warning) rather than guess.

A closed-over tensor cannot be baked by itself: ``make_fx``'s fake tracing refuses an operation
on a real tensor (the energy then falls back to eager), but ``t.item()`` / ``t.tolist()`` on one
return real Python numbers, which are baked; hence tensors are fingerprinted by ``_version``.
Tensors passed to ``argmin`` as parameters are arguments of the trace, never baked: an energy may
declare the module whose parameters it receives as arguments (``ArgminLayer`` does, through
``torch.func.functional_call``) in :data:`PASSED_PARAMETERS`; those parameters are then
fingerprinted by identity only (an optimizer step does not re-trace).
"""

from __future__ import annotations

import dis
import enum
import functools
import os
import site
import sys
import sysconfig
import types
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

#: entries of one container (elements of one numpy array) the fingerprint describes
LIMIT = 1000
#: nodes (values, entries, functions) one walk may visit
BUDGET = 20_000
#: levels of user functions / objects walked from the energy
MAX_DEPTH = 8
#: top-level packages whose modules, functions, classes and objects are taken by identity, with
#: every package installed in site-packages (except :data:`USER_PACKAGES`)
LIBRARIES = frozenset(sys.stdlib_module_names) | frozenset(sys.builtin_module_names) | {
    "torch", "numpy", "scipy", "functorch", "sympy", "triton", "typing_extensions", "_pytest",
    "pytest", "jax", "jaxlib", "cv2"}
#: packages walked like the user's code even when installed (their energies hold user state)
USER_PACKAGES = frozenset({"wibergian"})
#: attribute of an energy naming the ``nn.Module`` whose parameters it receives as arguments
PASSED_PARAMETERS = "_wibergian_passed_parameters"

_SIMPLE = frozenset({
    type(None), bool, int, float, complex, str, bytes, range, slice, type(Ellipsis),
    type(NotImplemented), torch.dtype, torch.device, torch.layout, torch.memory_format,
    torch.Size})
_BUILTIN_CALLABLES = (types.BuiltinFunctionType, types.BuiltinMethodType,
                      types.WrapperDescriptorType, types.MethodWrapperType,
                      types.MethodDescriptorType, types.ClassMethodDescriptorType)
_MODULE_STATE = frozenset({"_parameters", "_buffers", "_modules"})
_EMPTY = (dict, set, list)
_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL", "DELETE_GLOBAL"})
_names_cache: dict[types.CodeType, tuple[tuple[str, ...], frozenset[str]]] = {}


class Undescribable(Exception):
    """The energy reads state the fingerprint cannot describe (the message says what)."""


class State:
    """A fingerprint: ``key`` (hashable values and identities, compared with ``==``) and the
    objects whose identities it holds (kept alive, so no identity is reused meanwhile)."""

    __slots__ = ("key", "_keep")

    def __init__(self, key: tuple[Any, ...], keep: list[Any]) -> None:
        self.key = key
        self._keep = keep

    def __eq__(self, other: object) -> bool:
        return isinstance(other, State) and self.key == other.key

    __hash__ = None  # type: ignore[assignment]


def _installed_dirs() -> tuple[str, ...]:
    dirs = {sysconfig.get_paths().get(k) for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    try:
        dirs.update(site.getsitepackages())
        dirs.add(site.getusersitepackages())
    except AttributeError:  # a virtualenv's old site.py
        pass
    return tuple(os.path.join(os.path.abspath(d), "") for d in dirs if d)


_INSTALLED = _installed_dirs()
_library_cache: dict[str, bool] = {}


def _is_library(module_name: str | None) -> bool:
    """Whether the module's top-level package is a library: the standard library, a listed one,
    or one installed in site-packages (not the user's code, not :data:`USER_PACKAGES`)."""
    if module_name is None:
        return False
    root = module_name.partition(".")[0]
    hit = _library_cache.get(root)
    if hit is None:
        if root in USER_PACKAGES:
            hit = False
        elif root in LIBRARIES:
            hit = True
        else:
            module = sys.modules.get(root)
            if module is None:  # not imported (yet): decide when it is
                return False
            file = getattr(module, "__file__", None)
            hit = file is not None and os.path.abspath(file).startswith(_INSTALLED)
        _library_cache[root] = hit
    return hit


def _code_names(code: types.CodeType) -> tuple[tuple[str, ...], frozenset[str]]:
    """(names loaded as globals, all names incl. attributes) of ``code`` and the code nested in
    it; cached per code object (immutable)."""
    hit = _names_cache.get(code)
    if hit is None:
        globals_: dict[str, None] = {}
        every: set[str] = set()
        stack = [code]
        while stack:
            c = stack.pop()
            every.update(c.co_names)
            for ins in dis.get_instructions(c):
                if ins.opname in _LOADS:
                    globals_[str(ins.argval).removeprefix("NULL + ")] = None
            stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
        hit = (tuple(globals_), frozenset(every))
        _names_cache[code] = hit
    return hit


class _Walker:
    def __init__(self, passed: set[int]) -> None:
        self.out: list[Any] = []
        self.keep: list[Any] = []
        self.seen: dict[int, int] = {}
        self.budget = BUDGET
        self.passed = passed

    def ident(self, v: Any) -> None:
        self.out.append(id(v))
        self.keep.append(v)

    def once(self, v: Any) -> bool:
        """Whether ``v`` is new to this walk (else a back-reference is recorded)."""
        i = id(v)
        at = self.seen.get(i)
        if at is not None:
            self.out.append(("seen", at))
            return False
        self.seen[i] = len(self.out)
        self.keep.append(v)
        return True

    def walk(self, v: Any, depth: int, names: frozenset[str] = frozenset(), nest: int = 0
             ) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise Undescribable(f"more than {BUDGET} objects reachable from the energy")
        t = type(v)
        out = self.out
        if t in _SIMPLE:
            out.append(t)
            out.append(v)
            return
        if isinstance(v, Tensor):
            if id(v) in self.passed:
                out.append("arg")
                self.ident(v)
                return
            out.append("tensor")
            self.ident(v)
            out.append(v._version)
            out.append(v.shape)
            out.append(v.dtype)
            out.append(v.device)
            return
        if nest > 32:
            raise Undescribable("containers nested more than 32 levels deep")
        if t in (tuple, list, dict, set, frozenset) or isinstance(v, (tuple, list, dict)):
            self._container(v, depth, names, nest)
            return
        if isinstance(v, types.FunctionType):
            self._function(v, depth)
            return
        if isinstance(v, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType,
                          Iterator)):
            raise Undescribable(f"a {t.__name__} (its next value cannot be fingerprinted)")
        if isinstance(v, types.ModuleType):
            out.append("module")
            self.ident(v)
            if not _is_library(v.__name__) and self.once(v):
                d = v.__dict__
                for name in sorted(names & d.keys()):
                    out.append(name)
                    self.walk(d[name], depth + 1)
            return
        if isinstance(v, enum.Enum) or isinstance(v, _BUILTIN_CALLABLES):
            self.ident(v)
            self_ = getattr(v, "__self__", None)
            if self_ is not None and not isinstance(self_, types.ModuleType):
                self.walk(self_, depth, names, nest + 1)
            return
        if isinstance(v, functools.partial):
            out.append("partial")
            if self.once(v):
                self.walk(v.func, depth, names, nest + 1)
                self.walk(v.args, depth, names, nest + 1)
                self.walk(v.keywords, depth, names, nest + 1)
            return
        if isinstance(v, types.MethodType):
            out.append("method")
            self.walk(v.__self__, depth, names, nest + 1)
            self.walk(v.__func__, depth, names, nest + 1)
            return
        if isinstance(v, type):
            self._class(v, depth)
            return
        if (isinstance(v, torch.nn.Module) or depth == 0 or not _is_library(t.__module__)
                or t is types.SimpleNamespace or (t.__module__ == "argparse"
                                                  and t.__name__ == "Namespace")):
            self._object(v, depth, names, nest)
            return
        if t.__module__.partition(".")[0] == "numpy":
            self._numpy(v)
            return
        self.ident(v)  # an object of a library type: its identity (documented limit)

    def _container(self, v: Any, depth: int, names: frozenset[str], nest: int) -> None:
        if len(v) > LIMIT:
            raise Undescribable(f"a {type(v).__name__} of {len(v)} entries (more than {LIMIT})")
        out = self.out
        out.append(type(v))
        out.append(len(v))
        if isinstance(v, (set, frozenset)):
            if all(type(x) in _SIMPLE for x in v):
                out.append(frozenset(v))
                return
            items: Any = v
        else:
            items = v.items() if isinstance(v, dict) else v
        if not self.once(v):
            return
        for x in items:
            if isinstance(v, dict):
                self.walk(x[0], depth, names, nest + 1)
                self.walk(x[1], depth, names, nest + 1)
            else:
                self.walk(x, depth, names, nest + 1)

    def _function(self, fn: types.FunctionType, depth: int) -> None:
        out = self.out
        out.append("fn")
        self.ident(fn)
        if (depth > 0 and _is_library(fn.__module__)) or not self.once(fn):
            return
        if depth > MAX_DEPTH:
            raise Undescribable(f"user functions nested more than {MAX_DEPTH} levels deep "
                                f"({fn.__qualname__})")
        code = fn.__code__
        gnames, every = _code_names(code)
        g = fn.__globals__
        for name in gnames:
            out.append(name)
            if name in g:
                self.walk(g[name], depth + 1, every)
            else:
                out.append("absent")  # a builtin, or not defined yet
        for cell in fn.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:
                out.append("empty cell")
                continue
            self.walk(value, depth + 1, every)
        self.walk(fn.__defaults__, depth + 1, every)
        self.walk(fn.__kwdefaults__, depth + 1, every)

    def _class(self, cls: type, depth: int) -> None:
        self.out.append("class")
        self.ident(cls)
        if _is_library(cls.__module__) or not self.once(cls):
            return
        for name, value in cls.__dict__.items():
            if name in ("__dict__", "__weakref__", "__doc__", "__module__", "__qualname__",
                        "__annotations__", "__slots__", "__firstlineno__",
                        "__static_attributes__"):
                continue
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            elif isinstance(value, property):
                value = (value.fget, value.fset)
            elif type(value) is types.MemberDescriptorType:
                continue
            self.out.append(name)
            self.walk(value, depth + 1)
        for base in cls.__bases__:
            self._class(base, depth + 1)

    def _object(self, v: Any, depth: int, names: frozenset[str], nest: int) -> None:
        out = self.out
        out.append("object")
        if not self.once(v):
            return
        self._class(type(v), depth)
        d = getattr(v, "__dict__", None)
        slots = [s for c in type(v).__mro__ for s in getattr(c, "__slots__", ())
                 if s not in ("__dict__", "__weakref__")]
        if d is None and not slots:
            raise Undescribable(f"an object of type {type(v).__qualname__} without __dict__ "
                                "or __slots__")
        if isinstance(v, torch.nn.Module):  # hook dicts and the like: only when not empty
            d = {k: x for k, x in d.items() if not (k[0] == "_" and k not in _MODULE_STATE
                                                     and isinstance(x, _EMPTY) and not x)}
        if d is not None:
            self._container(d, depth + 1, names, nest + 1)
        for s in slots:
            out.append(s)
            self.walk(getattr(v, s, "unset"), depth + 1, names, nest + 1)

    def _numpy(self, v: Any) -> None:
        import numpy as np

        if isinstance(v, np.generic):
            self.out.append(type(v))
            self.out.append(v.item())
        elif isinstance(v, np.ndarray):
            if v.size > LIMIT:
                raise Undescribable(f"a numpy array of {v.size} elements (more than {LIMIT})")
            self.out.append((v.shape, v.dtype.str, v.tobytes()))
        else:
            self.ident(v)


def describe(energy: Any) -> State:
    """The fingerprint of what ``energy`` can read (module docstring); raises
    :class:`Undescribable` when it cannot say."""
    module = getattr(energy, PASSED_PARAMETERS, None)
    passed = {id(p) for p in module.parameters()} if module is not None else set()
    w = _Walker(passed)
    w.walk(energy, 0)
    return State(tuple(w.out), w.keep)
