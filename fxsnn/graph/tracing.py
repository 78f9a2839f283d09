"""``fxsnn.trace``: symbolic tracing of a deep copy, with errors that say where and what to do.

Activation sites stay whole (one ``call_module`` each, never traced through): fxsnn's own modules and the
user's QCFS activations that :mod:`fxsnn.graph.conventions` reads (:func:`_site_tracer`).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Any

from torch import fx, nn

from ..errors import TraceError
from ..nn import SITE_MODULES
from .conventions import qcfs_reading
from .standardize import batch_norm_modules_

__all__ = ["trace"]


class _LocatingTracer(fx.Tracer):
    """A Tracer that remembers which module it was inside and honours extra leaf modules."""

    def __init__(self, leaf_types: tuple[type, ...] = (), leaf_names: frozenset[str] = frozenset()):
        super().__init__()
        self.leaf_types = leaf_types
        self.leaf_names = leaf_names
        self.scope_stack: list[str] = []
        self.failed_in: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if (self.leaf_types and isinstance(m, self.leaf_types)) or module_qualified_name in self.leaf_names:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):
        path = self.path_of_module(m)
        self.scope_stack.append(path)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = path
            raise
        finally:
            self.scope_stack.pop()


def _site_tracer(root: nn.Module, leaf_types: tuple[type, ...], leaf_names: frozenset[str]) -> _LocatingTracer:
    """The tracer, with every activation site a leaf: fxsnn's site modules (:class:`fxsnn.nn.QCFS`, ``DAQCFS``,
    recorders, ``ParallelIF``) and the user's QCFS activations that a convention of
    :mod:`fxsnn.graph.conventions` reads (public QCFS / FS-PC code, ``register_qcfs``). Those are read (and
    probed) here, before tracing patches ``nn.Module`` attribute access and calls."""
    sites = frozenset(n for n, m in root.named_modules() if n and qcfs_reading(m) is not None)
    return _LocatingTracer(leaf_types + SITE_MODULES, leaf_names | sites)


def _warn_hooks(model: nn.Module) -> None:
    """Warn naming the modules whose forward (pre-)hooks the traced graph will not run."""
    hooked = [
        name or "<root>"
        for name, m in model.named_modules()
        if m._forward_hooks or m._forward_pre_hooks or getattr(m, "_forward_hooks_with_kwargs", None)
    ]
    if hooked:
        shown = ", ".join(repr(n) for n in hooked[:5]) + (f" and {len(hooked) - 5} more" if len(hooked) > 5 else "")
        warnings.warn(
            f"fxsnn.trace: forward hooks on {shown} are not part of the traced graph and will not run in the "
            "converted network (torch.fx records the modules' forward only); register them on the result's "
            "modules if you need them",
            stacklevel=3,
        )


def _trace_error(model: nn.Module, root: nn.Module, where: str | None, exc: Exception) -> TraceError:
    """The :class:`fxsnn.TraceError` for a failed trace: where it failed and the fix."""
    location = (
        f"inside module '{where}' ({type(root.get_submodule(where)).__name__})" if where else "in the top-level forward"
    )
    hint = (
        f"mark it as opaque with fxsnn.trace(model, leaf_modules=['{where}']) (fxsnn.convert takes the same "
        f"argument; the CLI --leaf-module {where}); its ReLUs then stay unconverted and the leaf stays analog, "
        "so the conversion needs allow_analog=True (--allow-analog) and gives a hybrid"
        if where
        else "pass concrete_args= for non-tensor arguments, or make the control flow independent of tensor values"
    )
    return TraceError(
        f"could not trace {type(model).__name__}: tracing failed {location}: {type(exc).__name__}: {exc}. "
        f"To fix it, {hint}."
    )


def trace(
    model: nn.Module, *, leaf_modules: Iterable[type | str] = (), concrete_args: dict[str, Any] | None = None
) -> fx.GraphModule:
    """Trace a **deep copy** of ``model`` with torch.fx and return its ``GraphModule``.

    The user's model is never changed by anything fxsnn does: every module of
    the result is a copy. A ``GraphModule`` (a model the user already traced,
    with their own tracer) is not traced again: the result is a deep copy of it.

    Args:
        model: any ``nn.Module`` whose ``forward`` torch.fx can trace.
        leaf_modules: module types or qualified names (``"layer1.0"``) to keep
            opaque (not traced through). ReLUs inside a leaf are not converted.
        concrete_args: passed to ``torch.fx.Tracer.trace`` to specialise
            non-tensor arguments (e.g. ``{"return_features": False}``).

    A BatchNorm subclass whose ``forward`` torch.fx traces through (timm's ``BatchNormAct2d`` calls
    ``F.batch_norm`` itself) comes back as an ``nn.BatchNorm*d`` module at its path, holding the copy's
    tensors (:func:`fxsnn.graph.standardize.batch_norm_modules_`), so the site patterns and Stage 1 see it;
    a ``GraphModule`` is copied as it is.

    Forward hooks and pre-hooks registered on ``model``'s modules are not traced: a ``UserWarning`` names
    the modules that have them.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``leaf_modules`` or ``concrete_args`` given with a ``GraphModule`` (already traced).
        fxsnn.TraceError: tracing failed (data-dependent control flow, say);
            the message names the module path where it failed and suggests
            ``leaf_modules=``; the original exception is ``__cause__``.

    Example::

        >>> gm = fxsnn.trace(torchvision.models.resnet18())
        >>> type(gm).__name__
        'GraphModule'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fxsnn.trace expects a torch.nn.Module; got {type(model).__name__}")
    leaf_modules = tuple(leaf_modules)
    if isinstance(model, fx.GraphModule):
        if leaf_modules or concrete_args:
            raise ValueError(
                "fxsnn.trace: this model is a GraphModule, already traced, so it is not traced again and "
                "leaf_modules= / concrete_args= cannot apply; pass them when tracing the original model"
            )
        return copy.deepcopy(model)
    leaf_types = tuple(x for x in leaf_modules if isinstance(x, type))
    leaf_names = frozenset(x for x in leaf_modules if isinstance(x, str))
    bad = [x for x in leaf_modules if not isinstance(x, (type, str))]
    if bad:
        raise TypeError(f"fxsnn.trace: leaf_modules takes module types or qualified names; got {bad!r}")
    _warn_hooks(model)
    root = copy.deepcopy(model)
    known = {name for name, _ in root.named_modules()}
    unknown = sorted(leaf_names - known)
    if unknown:
        raise ValueError(
            f"fxsnn.trace: leaf_modules names no such submodule: {unknown}; known names look like {sorted(known - {''})[:5]}"
        )
    tracer = _site_tracer(root, leaf_types, leaf_names)
    try:
        graph = tracer.trace(root, concrete_args=concrete_args)
    except Exception as exc:  # torch.fx raises many types; wrap them all
        raise _trace_error(model, root, tracer.failed_in, exc) from exc
    name = type(root).__name__
    gm = fx.GraphModule(tracer.root, graph, name)
    batch_norm_modules_(gm, root)
    gm.graph.lint()
    return gm
