"""Passes with contracts, and the generic site rewrite every activation pass is built on.

In the spirit of ``torch/fx/passes/infra/pass_base.py``: a pass states the stage
its sites must be in (``requires``) and the stage it leaves them in
(``ensures``). :func:`graph_pass` turns an in-place rewrite of a private copy
into a pure pass ``(gm, **options) -> GraphModule`` that

1. copies its input once (a plain ``nn.Module`` is traced first),
2. annotates the copy's sites (:func:`fxsnn.graph.sites.annotate_sites_`) and
   checks ``requires``, with an error that names the fix,
3. runs the rewrite, then finishes once (:func:`fxsnn.graph.edit.finish`) and
   checks ``ensures``,
4. prefixes every error it raises with its name (``fxsnn.passes.to_qcfs: ...``).

A pass with ``analog=True`` (those that turn sites into something else: ``insert_recorders``, ``to_qcfs``,
``to_da_qcfs``, ``lower_to_paraif``) takes ``allow_analog: bool = False`` and refuses a graph with analog
ops that make it a hybrid (GELU, SiLU, Sigmoid, ...; :func:`fxsnn.graph.sites.check_analog_`) unless it is
``True`` or an earlier pass was told so (the mark travels in ``node.meta``).

Site stages, in pipeline order: ``functional`` (a ReLU spelling that is not
yet a module), ``relu`` (an ``nn.ReLU`` site), ``recorder``, ``qcfs``,
``da-qcfs``, ``paraif``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torch import fx, nn

from ..errors import CalibrationError, ConversionError, FxsnnError
from ..graph.conventions import qcfs_reading
from ..graph.edit import copy_graph_module, describe_node, finish, first_tensor, require_graph_module, set_submodule
from ..graph.sites import Site, annotate_sites_, check_analog_, find_sites, no_site_message
from ..nn import DAQCFS, QCFS, ActivationRecorder, ParallelIF

__all__ = ["STAGES", "Contract", "graph_pass", "site_stage", "swap_sites_", "stage_error"]

STAGES = ("functional", "relu", "recorder", "qcfs", "da-qcfs", "paraif")
Swap = Callable[[Site, nn.Module, fx.Node], nn.Module]


@dataclass(frozen=True)
class Contract:
    """What a pass needs and guarantees: every site in one of ``requires`` before, in one of ``ensures`` after.

    An empty ``requires`` accepts any graph (a graph without sites too).
    ``decides``: the pass decides the sites (``normalize``), so their records
    are recomputed on its finished result; other passes keep them as they are.
    ``analog``: the pass refuses hybrid ops unless ``allow_analog=True`` (see the module docstring).
    """

    name: str
    requires: tuple[str, ...]
    ensures: tuple[str, ...]
    decides: bool = False
    analog: bool = False

    def __post_init__(self):
        bad = [s for s in self.requires + self.ensures if s not in STAGES]
        if bad:
            raise ValueError(f"Contract {self.name}: unknown stages {bad}; stages are {STAGES}")


def site_stage(node: fx.Node, module: nn.Module | None) -> str:
    """The stage of one site: its module's kind, or ``"functional"`` for a ReLU call that is not a module."""
    if node.op != "call_module":
        return "functional"
    if isinstance(module, ParallelIF):
        return "paraif"
    if isinstance(module, DAQCFS):
        return "da-qcfs"
    if isinstance(module, QCFS) or qcfs_reading(module) is not None:  # fxsnn's, or the user's QCFS activation
        return "qcfs"
    if isinstance(module, ActivationRecorder):
        return "recorder"
    return "relu"


_NEXT_STEP = {
    "functional": "run fxsnn.passes.normalize(gm) first (insert_recorders does that for you)",
    "relu": "insert recorders first: fxsnn.passes.insert_recorders(gm), then fxsnn.calibrate(gm, data)",
    "recorder": "quantise first: fxsnn.passes.to_qcfs(gm, levels=T) (or to_da_qcfs) after fxsnn.calibrate(gm, data)",
    "qcfs": "lower it with fxsnn.passes.lower_to_paraif(gm, T=...)",
    "da-qcfs": "lower it with fxsnn.passes.lower_to_paraif(gm, T=...)",
    "paraif": "the network is already lowered to ParallelIF neurons",
}


def _stage_problem(site: Site, node: fx.Node, module: nn.Module | None, stage: str, c: Contract) -> FxsnnError:
    if stage == "functional":
        return ConversionError(f"{describe_node(node)} is a functional ReLU; {_NEXT_STEP[stage]}")
    if stage == "recorder" and not module.has_data and "qcfs" in c.requires:
        return CalibrationError(
            f"recorder '{site.name}' saw no data; run fxsnn.calibrate(gm, data), then fxsnn.passes.to_qcfs(gm, "
            "levels=T), before this pass"
        )
    wants = " or ".join(c.requires)
    if stage in STAGES[STAGES.index(c.requires[-1]) + 1 :]:
        fix = f"this pass takes {wants} sites: it runs on a graph that has not been converted this far yet"
    else:
        fix = f"this pass takes {wants} sites; {_NEXT_STEP[stage]}"
    return stage_error(site, module, fix)


def _check_requires(gm: fx.GraphModule, c: Contract) -> None:
    if not c.requires:
        return
    sites = find_sites(gm)
    if not sites:
        raise ConversionError(no_site_message(gm))
    modules = dict(gm.named_modules())
    nodes = {n.name: n for n in gm.graph.nodes}
    for site in sites:
        node = nodes[site.node]
        module = modules.get(node.target) if node.op == "call_module" else None
        stage = site_stage(node, module)
        if stage not in c.requires:
            raise _stage_problem(site, node, module, stage, c)


def _check_ensures(gm: fx.GraphModule, c: Contract) -> None:
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if "fxsnn.site" in node.meta:
            stage = site_stage(node, modules.get(node.target) if node.op == "call_module" else None)
            if stage not in c.ensures:  # a bug in the pass, not in the caller's graph
                raise AssertionError(f"{describe_node(node)} is at stage {stage!r}; the pass ensures {c.ensures}")


def _prefix(exc: BaseException, name: str) -> None:
    """Prefix ``exc``'s message with the pass name, once (an inner pass's error keeps the inner name)."""
    if getattr(exc, "fxsnn_pass", None) is None and exc.args and isinstance(exc.args[0], str):
        if not exc.args[0].startswith(name):
            exc.args = (f"{name}: {exc.args[0]}",) + exc.args[1:]
        exc.fxsnn_pass = name


@contextlib.contextmanager
def _warnings_prefixed(name: str) -> Iterator[None]:
    """Warnings raised inside the pass are re-issued after it with the pass name in front, like its errors."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            pending = list(caught)
    for w in pending:
        text = str(w.message)
        message = text if text.startswith(name) else f"{name}: {text}"
        warnings.warn_explicit(message, w.category, w.filename, w.lineno)


def graph_pass(
    name: str,
    *,
    requires: tuple[str, ...] = (),
    ensures: tuple[str, ...],
    decides: bool = False,
    analog: bool = False,
) -> Callable:
    """Decorate ``rewrite_(gm, **options) -> GraphModule``, an in-place rewrite, into a pure pass with a contract.

    The pass copies its input once, annotates and checks ``requires``, runs
    ``rewrite_`` on the copy, finishes once, checks ``ensures``, and prefixes
    its errors with ``name``; ``decides=True`` re-annotates the finished
    result; ``analog=True`` adds the ``allow_analog`` keyword and the hybrid check. ``pass_.contract`` holds the :class:`Contract` and
    ``pass_.rewrite_`` the undecorated in-place rewrite (for a pass that runs
    another on the copy it already owns: ``insert_recorders`` normalises).

    Example::

        @graph_pass("fxsnn.passes.to_qcfs", requires=("recorder", "qcfs", "da-qcfs"), ensures=("qcfs",))
        def to_qcfs(gm, *, levels): ...
    """
    contract = Contract(name, tuple(requires), tuple(ensures), decides, analog)

    def decorate(rewrite_: Callable[..., fx.GraphModule]) -> Callable[..., fx.GraphModule]:
        @functools.wraps(rewrite_)
        def pass_(gm: nn.Module, /, **options) -> fx.GraphModule:
            allow = options.pop("allow_analog", False) if contract.analog else None
            try:
                with _warnings_prefixed(name):
                    gm = annotate_sites_(copy_graph_module(require_graph_module(gm, where=name)))
                    _check_requires(gm, contract)
                    if contract.analog:
                        check_analog_(gm, allow_analog=allow, where=name)
                    out = finish(rewrite_(gm, **options))
                    if contract.decides:
                        annotate_sites_(out, refresh=True)
                    _check_ensures(out, contract)
                    return out
            except (FxsnnError, ValueError, TypeError) as exc:
                _prefix(exc, name)
                raise

        pass_.contract = contract
        pass_.rewrite_ = rewrite_
        if analog:
            sig = inspect.signature(rewrite_)
            extra = inspect.Parameter("allow_analog", inspect.Parameter.KEYWORD_ONLY, default=False, annotation="bool")
            pass_.__signature__ = sig.replace(parameters=[*sig.parameters.values(), extra])
        return pass_

    return decorate


def swap_sites_(gm: fx.GraphModule, swap: Swap) -> fx.GraphModule:
    """Replace the module of every activation site of ``gm`` by ``swap(site, module, node)``, **in place**.

    Sites keep their qualified name through every stage (``layer1.0.relu`` is a
    ReLU, then a recorder, a QCFS, a ParallelIF), so reports can line stages
    up; the graph itself, and so every ``node.meta`` record, does not change:
    only the module at each call target. New modules follow the model's device
    and floating dtype. Used inside a :func:`graph_pass` (which copies and finishes).
    """
    modules = dict(gm.named_modules())
    nodes = {n.name: n for n in gm.graph.nodes}
    ref = first_tensor(gm)  # the model's device and floating dtype, for every new module
    for site in find_sites(gm):
        node = nodes[site.node]
        new = swap(site, modules[node.target], node)
        if site.channel_axis != 1:  # e.g. -1 after a Linear: the module runs on [B, C, ...] views of [B, ..., C]
            new.channel_axis = site.channel_axis
        if ref is not None:  # follow the model's device and floating dtype
            new = new.to(device=ref.device, dtype=ref.dtype)
        set_submodule(gm, node.target, new)
    return gm


def stage_error(site: Site, module: nn.Module | None, fix: str) -> ConversionError:
    """A :class:`fxsnn.ConversionError` for a site in the wrong stage (the pass prefixes its name)."""
    return ConversionError(f"site '{site.name}' is a {type(module).__name__}; {fix}")
