"""Activation sites: where the ReLUs (later recorders, QCFS, ParallelIF) sit, and what feeds them."""

from __future__ import annotations

from dataclasses import dataclass

from tabulate import tabulate
from torch import fx, nn

from ..nn import SITE_MODULES
from .edit import require_graph_module
from .patterns import BATCHNORMS, WEIGHTED, is_add, is_relu, is_view

__all__ = ["Site", "SiteTable", "find_sites"]


@dataclass(frozen=True)
class Site:
    """One activation site.

    Attributes:
        name: qualified module path of the site (after ``normalize``), or the
            node name for a ReLU spelling that is not yet a module.
        node: the graph node's name.
        kind: ``"ReLU"``, ``"F.relu"``-style spelling, or the fxsnn module kind
            (``"recorder"``, ``"QCFS"``, ``"DA-QCFS"``, ``"ParallelIF"``).
        pattern: the producer chain, e.g. ``"conv→bn→relu"``, ``"add→relu"``, ``"relu"``.
        producers: module paths of the chain's producers (conv, bn), in order.
        channels: number of channels (dim 1), or ``None`` when it cannot be
            known without running data.
    """

    name: str
    node: str
    kind: str
    pattern: str
    producers: tuple[str, ...]
    channels: int | None


class SiteTable(tuple):
    """A tuple of :class:`Site` that prints as a table."""

    def __str__(self) -> str:
        rows = [(s.name, s.kind, s.pattern, s.channels if s.channels is not None else "?") for s in self]
        return tabulate(rows, headers=("site", "kind", "pattern", "channels"), tablefmt="simple")

    def __repr__(self) -> str:
        return f"SiteTable({len(self)} sites)\n{self}"

    def names(self) -> list[str]:
        return [s.name for s in self]


def _kind(node: fx.Node, modules) -> str | None:
    if node.op == "call_module":
        m = modules.get(node.target)
        if isinstance(m, SITE_MODULES):
            return getattr(m, "kind", None) or "recorder"
    if is_relu(node, modules):
        if node.op == "call_module":
            return "ReLU"
        target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "relu")
        return f"{node.op.replace('call_', '')} {target}"
    return None


def _single_user(node) -> bool:
    return isinstance(node, fx.Node) and len(node.users) == 1


def _out_channels(m: nn.Module) -> int | None:
    for attr in ("out_channels", "out_features", "num_features"):
        if hasattr(m, attr):
            return int(getattr(m, attr))
    return None


def infer_channels(node, modules, depth: int = 0) -> int | None:
    """Channels (dim 1) of a node's output, found by walking back through channel-preserving ops."""
    if not isinstance(node, fx.Node) or depth > 50:
        return None
    if node.op == "call_module":
        m = modules.get(node.target)
        c = _out_channels(m) if m is not None else None
        if c is not None:
            return c
        if isinstance(m, SITE_MODULES) and getattr(m, "channels", None):
            return int(m.channels)
    if is_add(node) or is_relu(node, modules) or (node.op == "call_module" and not is_view(node, modules)):
        for a in node.all_input_nodes:
            c = infer_channels(a, modules, depth + 1)
            if c is not None:
                return c
    return None


def _chain(node: fx.Node, modules) -> tuple[str, tuple[str, ...]]:
    src = node.args[0] if node.args else None
    chain: list[str] = []
    if _single_user(src) and src.op == "call_module" and isinstance(modules.get(src.target), BATCHNORMS):
        chain.append(src.target)
        src = src.args[0]
    if _single_user(src) and src.op == "call_module" and isinstance(modules.get(src.target), WEIGHTED):
        kind = "linear" if isinstance(modules[src.target], nn.Linear) else "conv"
        chain.insert(0, src.target)
        return "→".join([kind] + (["bn"] if len(chain) == 2 else []) + ["relu"]), tuple(chain)
    if chain:
        return "bn→relu", tuple(chain)
    if isinstance(src, fx.Node) and is_add(src):
        return "add→relu", ()
    return "relu", ()


def find_sites(gm: nn.Module) -> SiteTable:
    """List every activation site of a graph, in graph order, with its producer chain.

    Works at every stage: raw ReLU spellings, ``nn.ReLU`` sites after
    :func:`fxsnn.passes.normalize`, recorders, QCFS / DA-QCFS and ParallelIF.

    Example::

        >>> print(fxsnn.find_sites(fxsnn.trace(model)))
        site           kind    pattern       channels
        -------------  ------  ------------  ----------
        relu           ReLU    conv→bn→relu  16
    """
    gm = require_graph_module(gm, where="fxsnn.find_sites")
    modules = dict(gm.named_modules())
    out = []
    for node in gm.graph.nodes:
        kind = _kind(node, modules)
        if kind is None:
            continue
        pattern, producers = _chain(node, modules)
        name = node.target if node.op == "call_module" else node.name
        channels = infer_channels(node, modules)
        out.append(Site(name, node.name, kind, pattern, producers, channels))
    return SiteTable(out)
