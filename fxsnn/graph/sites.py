"""Activation sites and the other nonlinear ops, decided once and written into ``node.meta``.

The annotation step (:func:`annotate_sites_`, the pt2e quantizer's style) writes
one small frozen record per node:

- ``node.meta["fxsnn.site"]`` — a :class:`SiteRecord` on every ReLU site (later a
  recorder, QCFS / DA-QCFS, ParallelIF): producer pattern, producer nodes and
  module paths, channels and the channel axis;
- ``node.meta["fxsnn.analog"]`` — an :class:`AnalogOp` on every other nonlinear
  op (GELU, Sigmoid, Hardswish, MaxPool, Softmax, ...; clipped ReLUs such as
  ReLU6 are sites): what stays analog.

Passes keep the records on the nodes they keep and copy them to the nodes
they put in a site's place (``normalize`` copies ``node.meta`` whole); :func:`find_sites`,
:func:`find_analog_ops`, ``fxsnn.summary`` and ``fxsnn.analyze`` read them. Each
record is also shown, as a short string, in ``node.meta["custom"]["fxsnn"]``,
which torch.fx's own ``gm.print_readable()`` prints as a per-node
``# Annotation: {'fxsnn': ...}`` comment; :func:`print_tabular` adds the same
column to ``graph.print_tabular()`` (torch's table has no hook for it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tabulate import tabulate
from torch import fx, nn

from ..errors import ConversionError
from ..nn import SITE_MODULES
from ..report.table import Rows
from .edit import node_scope, require_graph_module
from .patterns import (
    BATCHNORMS,
    WEIGHTED,
    analog_kind,
    is_add,
    is_max_pool,
    is_relu,
    is_view,
    qcfs_reading,
    relu_clip,
)
from .rate import is_channel_cat, returns_metadata

__all__ = [
    "SITE_KEY",
    "ANALOG_KEY",
    "SiteRecord",
    "AnalogOp",
    "Site",
    "SiteTable",
    "AnalogTable",
    "annotate_sites_",
    "find_sites",
    "find_analog_ops",
    "find_hybrid_ops",
    "check_analog_",
    "no_site_message",
    "print_tabular",
    "infer_channels",
]

SITE_KEY = "fxsnn.site"
ANALOG_KEY = "fxsnn.analog"
#: the MaxPool kind that rate mode runs exactly (its input is a neuron's spike train; see fxsnn.graph.rate)
MAXPOOL_ON_SPIKES = "MaxPool (after a neuron)"
#: a MaxPool that no site precedes: it pools the analog input, which is the same at every time step
MAXPOOL_ON_INPUT = "MaxPool (before any neuron)"
#: the analog kinds that compute exactly what the ANN computes, in both modes: not a hybrid, never refused
EXACT_KINDS = frozenset({MAXPOOL_ON_SPIKES, MAXPOOL_ON_INPUT})
#: ``node.meta`` key set on an analog op the user chose to keep (``allow_analog=True``): the passes accept it
ALLOWED_KEY = "fxsnn.analog_allowed"


@dataclass(frozen=True)
class SiteRecord:
    """What fxsnn decided at one activation site: ``node.meta["fxsnn.site"]``.

    Attributes:
        pattern: the producer chain, ``"conv→bn→relu"``, ``"linear→relu"``, ``"bn→relu"``,
            ``"add→relu"`` or ``"relu"``.
        producer_nodes: graph node names of the chain's producers (conv, bn), in order.
        producers: their module paths, in order.
        channels: ``C``, or ``None`` when it cannot be known without running data.
        channel_axis: the dim of the site's input that holds ``C``: ``1`` for a
            ``[B, C, ...]`` conv / BN output, ``-1`` for a Linear producer
            (``[B, C]`` or ``[B, N, C]``).
        clip: ``a`` of a clipped ReLU ``min(max(x, 0), a)`` (``nn.ReLU6``: 6, ``nn.Hardtanh(0, a)``,
            ``torch.clamp(x, 0, a)``); ``None`` for a plain ReLU. Its θ never exceeds ``a``.
    """

    pattern: str
    producer_nodes: tuple[str, ...]
    producers: tuple[str, ...]
    channels: int | None
    channel_axis: int
    clip: float | None = None

    def __str__(self) -> str:
        c = "?" if self.channels is None else self.channels
        clip = "" if self.clip is None else f" clip={self.clip:g}"
        return f"site {self.pattern} C={c} axis={self.channel_axis}{clip}"


@dataclass(frozen=True)
class AnalogOp:
    """A nonlinear op that does not become spiking neurons: ``node.meta["fxsnn.analog"]``.

    Attributes:
        kind: ``"GELU"``, ``"Sigmoid"``, ``"Hardtanh"`` (other than ``Hardtanh(0, a)``, a clipped-ReLU
            site), ``"Softmax"``, ``"MaxPool"``, ...;
            ``"MaxPool (after a neuron)"`` for a max pooling of neuron outputs, which
            rate mode runs exactly (:func:`fxsnn.graph.rate_mode_blockers`);
            ``"MaxPool (before any neuron)"`` for one that no site precedes (it pools
            the input, the same at every time step);
            ``"opaque module"`` for a leaf module of a user class.
        node: the graph node's name.
        path: the module path (``call_module`` target, or the module whose ``forward`` made the call).
    """

    kind: str
    node: str
    path: str

    def __str__(self) -> str:
        return f"analog {self.kind}"


@dataclass(frozen=True)
class Site:
    """One activation site, as :func:`find_sites` lists it.

    Attributes:
        name: qualified module path of the site (after ``normalize``), or the
            node name for a ReLU spelling that is not yet a module.
        node: the graph node's name.
        kind: ``"ReLU"``, ``"F.relu"``-style spelling, the fxsnn module kind
            (``"recorder"``, ``"QCFS"``, ``"DA-QCFS"``, ``"ParallelIF"``), or ``"QCFS-like <class>"`` for a
            QCFS activation of the user's code (:mod:`fxsnn.graph.conventions`).
        pattern: the producer chain, e.g. ``"conv→bn→relu"``, ``"add→relu"``, ``"relu"``.
        producers: module paths of the chain's producers (conv, bn), in order.
        channels: number of channels, or ``None`` when it cannot be
            known without running data.
        channel_axis: the dim that holds the channels (``1``; ``-1`` after a Linear).
        producer_nodes: node names of the chain's producers.
        clip: ``a`` of a clipped ReLU (ReLU6: 6), else ``None`` (:class:`SiteRecord`).
    """

    name: str
    node: str
    kind: str
    pattern: str
    producers: tuple[str, ...]
    channels: int | None
    channel_axis: int = 1
    producer_nodes: tuple[str, ...] = ()
    clip: float | None = None


class AnalogTable(Rows):
    """A tuple of :class:`AnalogOp` that prints as a table."""

    headers = {"node": "node", "kind": "kind", "path": "module"}

    def table(self, tablefmt: str = "simple") -> str:
        """The rows as a table; a function called at the top level shows ``(top level)`` as its module."""
        shown = [AnalogOp(op.kind, op.node, op.path or "(top level)") for op in self]
        return Rows(shown, self.headers).table(tablefmt)

    def counts(self) -> dict[str, int]:
        """``{kind: how many}``, in order of first appearance."""
        out: dict[str, int] = {}
        for op in self:
            out[op.kind] = out.get(op.kind, 0) + 1
        return out

    def count_text(self) -> str:
        """``"16 × Sigmoid, 49 × SiLU"``."""
        return ", ".join(f"{n} × {k}" for k, n in self.counts().items())

    def hybrid_note(self) -> str:
        """The lines every printout adds for a hybrid network (``""`` when no op is listed)."""
        if not self:
            return ""
        return (
            f"HYBRID network: {len(self)} nonlinear op(s) stay analog, not spiking ({self.count_text()}); spike "
            "mode runs them on real per-step values and rate mode cannot run those after a neuron (docs/architecture.md, "
            "Hybrids):\n" + self.table()
        )


class SiteTable(Rows):
    """A tuple of :class:`Site` that prints as a table (a :class:`fxsnn.report.table.Rows`).

    ``hybrid``: the graph's analog ops that make it a hybrid (:func:`find_hybrid_ops`), printed under the
    table when there are any.
    """

    headers = {"name": "site", "kind": "kind", "pattern": "pattern", "channels": "channels"}

    def __new__(cls, rows: Iterable[Site] = (), hybrid: Iterable[AnalogOp] = ()) -> SiteTable:
        self = super().__new__(cls, tuple(rows))
        self.hybrid = AnalogTable(hybrid)
        return self

    def names(self) -> list[str]:
        return [s.name for s in self]

    def __str__(self) -> str:
        return "\n".join(t for t in (self.table(), self.hybrid.hybrid_note()) if t)


# -- the annotation step -----------------------------------------------------------
def _kind(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    if node.op == "call_module":
        m = modules.get(node.target)
        if isinstance(m, SITE_MODULES):
            return getattr(m, "kind", None) or "recorder"
        if qcfs_reading(m) is not None:  # the user's own QCFS activation (fxsnn.graph.conventions)
            return f"QCFS-like {type(m).__name__}"
    if is_relu(node, modules):
        if node.op == "call_module":
            return "ReLU"
        target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "relu")
        return f"{node.op.replace('call_', '')} {target}"
    return None


def _single_user(node: object) -> bool:
    """One user reads the node's values (reads of its shape, ``x.ndim`` in timm's asserts, do not count)."""
    return isinstance(node, fx.Node) and sum(not returns_metadata(u) for u in node.users) == 1


#: modules that return their input's values in eval (timm's ``BatchNormAct2d`` puts its ``drop`` between BN and act)
_PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def _pass_through(node: object, modules: dict[str, nn.Module]) -> bool:
    return (
        isinstance(node, fx.Node)
        and node.op == "call_module"
        and isinstance(modules.get(node.target), _PASS_THROUGH)
        and bool(node.args)
    )


def _out_channels(m: nn.Module) -> tuple[int, int] | None:
    """``(channels, axis)`` of a module's output, from its ``out_channels`` / ``out_features`` / ``num_features``."""
    for attr in ("out_channels", "out_features", "num_features"):
        if hasattr(m, attr):
            return int(getattr(m, attr)), (-1 if attr == "out_features" else 1)
    return None


def _channel_info(node: object, modules: dict[str, nn.Module], depth: int = 0) -> tuple[int | None, int]:
    """``(channels, channel axis)`` of a node's output, walking back through channel-preserving ops."""
    if not isinstance(node, fx.Node) or depth > 50:
        return None, 1
    rec = node.meta.get(SITE_KEY) if depth else None  # an earlier site's decision (never the node's own)
    if isinstance(rec, SiteRecord) and rec.channels is not None:
        return rec.channels, rec.channel_axis
    if node.op == "call_module":
        m = modules.get(node.target)
        found = _out_channels(m) if m is not None else None
        if found is not None:
            return found
        if isinstance(m, SITE_MODULES) and getattr(m, "channels", None):
            return int(m.channels), getattr(m, "channel_axis", 1)
    walk = node.op == "call_module" and (not is_view(node, modules) or _pass_through(node, modules))
    if is_add(node) or is_relu(node, modules) or walk:
        for a in node.all_input_nodes:
            c, axis = _channel_info(a, modules, depth + 1)
            if c is not None:
                return c, axis
    return None, 1


def infer_channels(node: object, modules: dict[str, nn.Module]) -> int | None:
    """Channels of a node's output, found by walking back through channel-preserving ops."""
    return _channel_info(node, modules)[0]


def _chain(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str, tuple[fx.Node, ...]]:
    src = node.args[0] if node.args else None
    while _single_user(src) and _pass_through(src, modules):
        src = src.args[0]
    chain: list[fx.Node] = []
    if _single_user(src) and src.op == "call_module" and isinstance(modules.get(src.target), BATCHNORMS):
        chain.append(src)
        src = src.args[0]
    if _single_user(src) and src.op == "call_module" and isinstance(modules.get(src.target), WEIGHTED):
        kind = "linear" if isinstance(modules[src.target], nn.Linear) else "conv"
        chain.insert(0, src)
        return "→".join([kind] + (["bn"] if len(chain) == 2 else []) + ["relu"]), tuple(chain)
    if chain:
        return "bn→relu", tuple(chain)
    if isinstance(src, fx.Node) and is_add(src):
        return "add→relu", ()
    return "relu", ()


def _site_record(node: fx.Node, modules: dict[str, nn.Module]) -> SiteRecord:
    pattern, chain = _chain(node, modules)
    channels, axis = _channel_info(node, modules)
    clip = relu_clip(node, modules)
    if clip is None and node.op == "call_module":  # a recorder keeps the clip of the ReLU it replaced
        clip = getattr(modules.get(node.target), "clip", None)
    return SiteRecord(pattern, tuple(n.name for n in chain), tuple(n.target for n in chain), channels, axis, clip)


def _on_spikes(node: fx.Node, modules: dict[str, nn.Module], on_spikes: set[fx.Node]) -> bool:
    """Whether ``node`` is a max pooling (or channel-wise concatenation) of neuron outputs (see fxsnn.graph.rate)."""
    if is_max_pool(node, modules):
        return bool(node.args) and node.args[0] in on_spikes
    return is_channel_cat(node) and all(a in on_spikes for a in node.all_input_nodes)


def _set(node: fx.Node, key: str, record: object) -> None:
    node.meta[key] = record
    node.meta["custom"] = {**node.meta.get("custom", {}), "fxsnn": str(record)}  # a new dict: copies share meta


def annotate_sites_(gm: fx.GraphModule, *, refresh: bool = False) -> fx.GraphModule:
    """Write a :class:`SiteRecord` / :class:`AnalogOp` into ``node.meta`` of every site / other nonlinear op.

    **In place** on ``gm``'s node metadata only (code, modules and outputs are
    untouched); returns ``gm``. Nodes that already carry a record keep it
    unless ``refresh=True`` (``fxsnn.passes.normalize`` refreshes: it decides
    the sites). A MaxPool whose input is a site (or such a MaxPool) is
    recorded as ``"MaxPool (after a neuron)"``: rate mode runs it exactly.

    Example::

        >>> gm = fxsnn.graph.sites.annotate_sites_(fxsnn.trace(model))
        >>> [n.meta["fxsnn.site"].pattern for n in gm.graph.nodes if "fxsnn.site" in n.meta]
        ['conv→bn→relu', 'add→relu']
    """
    modules = dict(gm.named_modules())
    on_spikes: set[fx.Node] = set()
    after_site: set[fx.Node] = set()  # depends on a site's output
    for node in gm.graph.nodes:
        if _kind(node, modules) is not None:
            on_spikes.add(node)
            after_site.add(node)
            if refresh or not isinstance(node.meta.get(SITE_KEY), SiteRecord):
                _set(node, SITE_KEY, _site_record(node, modules))
            continue
        if any(a in after_site for a in node.all_input_nodes):
            after_site.add(node)
        if _on_spikes(node, modules, on_spikes):
            on_spikes.add(node)
        kind = analog_kind(node, modules)
        if kind is None:
            continue
        if kind == "MaxPool" and node in on_spikes:
            kind = MAXPOOL_ON_SPIKES
        elif kind == "MaxPool" and node not in after_site:
            kind = MAXPOOL_ON_INPUT
        if refresh or not isinstance(node.meta.get(ANALOG_KEY), AnalogOp):
            path = node.target if node.op == "call_module" else node_scope(node)
            _set(node, ANALOG_KEY, AnalogOp(kind, node.name, path))
    return gm


# -- reading the records -------------------------------------------------------------
def find_sites(gm: nn.Module) -> SiteTable:
    """List every activation site of a graph, in graph order, from its ``node.meta["fxsnn.site"]`` record.

    Works at every stage: raw ReLU spellings, ``nn.ReLU`` sites after
    :func:`fxsnn.passes.normalize`, recorders, QCFS / DA-QCFS and ParallelIF.
    A site without a record yet is annotated first (:func:`annotate_sites_`).

    Example::

        >>> print(fxsnn.find_sites(fxsnn.trace(model)))
        site           kind    pattern       channels
        -------------  ------  ------------  ----------
        relu           ReLU    conv→bn→relu  16

    The table also carries (and prints under it) the analog ops that make the graph a hybrid
    (``.hybrid``, :func:`find_hybrid_ops`).
    """
    gm = require_graph_module(gm, where="fxsnn.find_sites")
    annotate_sites_(gm)
    modules = dict(gm.named_modules())
    out = []
    for node in gm.graph.nodes:
        kind = _kind(node, modules)
        if kind is None:
            continue
        rec: SiteRecord = node.meta[SITE_KEY]
        name = node.target if node.op == "call_module" else node.name
        channels = rec.channels
        if channels is None and node.op == "call_module":  # a recorder learns C from its first batch
            channels = getattr(modules[node.target], "channels", None)
        out.append(
            Site(
                name,
                node.name,
                kind,
                rec.pattern,
                rec.producers,
                channels,
                rec.channel_axis,
                rec.producer_nodes,
                rec.clip,
            )
        )
    return SiteTable(out, hybrid=_hybrid(gm))


def find_analog_ops(gm: nn.Module) -> AnalogTable:
    """Every nonlinear op of a graph that is not a ReLU site — what stays analog — in graph order.

    Read from ``node.meta["fxsnn.analog"]`` (annotated first where missing).
    fxsnn converts ReLUs (plain and clipped) only; a network with GELU, Sigmoid, Hardswish, ... comes
    back as a hybrid in which these ops still compute on analog values.

    Example::

        >>> print(fxsnn.graph.sites.find_analog_ops(fxsnn.trace(torchvision.models.mobilenet_v3_small())))
        node          kind       module
        ------------  ---------  -------------------
        features_0_2  Hardswish  features.0.2
    """
    gm = require_graph_module(gm, where="fxsnn.graph.sites.find_analog_ops")
    annotate_sites_(gm)
    return AnalogTable(n.meta[ANALOG_KEY] for n in gm.graph.nodes if isinstance(n.meta.get(ANALOG_KEY), AnalogOp))


def _hybrid(gm: fx.GraphModule) -> AnalogTable:
    ops = (n.meta.get(ANALOG_KEY) for n in gm.graph.nodes)
    return AnalogTable(op for op in ops if isinstance(op, AnalogOp) and op.kind not in EXACT_KINDS)


def find_hybrid_ops(gm: nn.Module) -> AnalogTable:
    """The analog ops that make ``gm`` a hybrid: :func:`find_analog_ops` but the exact MaxPools.

    A max pooling of neuron outputs (``"MaxPool (after a neuron)"``) or of the input before any neuron
    (``"MaxPool (before any neuron)"``) computes what the ANN computes, in both modes; every other analog op
    (GELU, SiLU, Sigmoid, Hardswish, Softmax, LeakyReLU, Tanh, LayerNorm, an opaque module, a MaxPool of
    analog values between neurons, ...) does not spike, and fxsnn refuses to convert a network that has one
    unless it is asked to (``allow_analog=True``; :func:`check_analog_`).
    """
    gm = require_graph_module(gm, where="fxsnn.graph.sites.find_hybrid_ops")
    annotate_sites_(gm)
    return _hybrid(gm)


_WHAT_IS_CONVERTED = (
    "fxsnn turns ReLU-family activations into spiking neurons (nn.ReLU, F.relu, ReLU6, Hardtanh(0, a), "
    "clamp(x, 0, a) and their other spellings)"
)


def no_site_message(gm: fx.GraphModule) -> str:
    """Why a graph without a ReLU site cannot be converted, naming the other nonlinearities it has."""
    ops = AnalogTable(op for op in find_analog_ops(gm) if op.kind not in EXACT_KINDS)
    found = (
        f"; it has other nonlinearities, which fxsnn does not convert: {ops.count_text()} (first: node "
        f"'{ops[0].node}', module '{ops[0].path}'). Replace them with ReLUs (and retrain) to convert this model"
        if ops
        else ". If the ReLUs sit inside a leaf module, trace without marking it as a leaf"
    )
    return f"the model has no ReLU activation site; {_WHAT_IS_CONVERTED}{found}."


def check_analog_(gm: fx.GraphModule, *, allow_analog: bool, where: str) -> AnalogTable:
    """Refuse a hybrid unless asked for one: the :func:`find_hybrid_ops` of ``gm``, checked and marked **in place**.

    ``allow_analog=False``: raise :class:`fxsnn.ConversionError` listing every hybrid op (kind, node, module
    path, and a count per kind) with the fix, unless each op already carries the mark of an earlier opt-in
    (``node.meta["fxsnn.analog_allowed"]``, which the passes copy along). ``allow_analog=True``: mark them, so
    the later passes accept them too. Returns the hybrid ops.
    """
    if not isinstance(allow_analog, bool):
        raise TypeError(f"{where}: allow_analog must be True or False; got {allow_analog!r}")
    annotate_sites_(gm)
    nodes = [n for n in gm.graph.nodes if isinstance(n.meta.get(ANALOG_KEY), AnalogOp)]
    nodes = [n for n in nodes if n.meta[ANALOG_KEY].kind not in EXACT_KINDS]
    ops = AnalogTable(n.meta[ANALOG_KEY] for n in nodes)
    if allow_analog:
        for n in nodes:
            n.meta[ALLOWED_KEY] = True
    elif any(not n.meta.get(ALLOWED_KEY) for n in nodes):
        raise ConversionError(
            f"{where}: {len(ops)} nonlinear op(s) would not become spiking neurons ({ops.count_text()}); "
            f"{_WHAT_IS_CONVERTED}, so the result would be a hybrid in which these ops compute on analog values:\n"
            f"{ops.table()}\nTo convert it anyway as a marked hybrid, pass allow_analog=True (command line: "
            "--allow-analog); for a pure SNN, replace these ops with ReLU-family activations (and retrain)."
        )
    return ops


def print_tabular(gm: fx.GraphModule) -> str:
    """``gm.graph.print_tabular()`` with an ``fxsnn`` column showing each node's record; prints and returns it.

    torch.fx's ``print_tabular`` has no hook for extra columns, hence this
    helper; ``gm.print_readable()`` needs none (it prints the records as
    ``# Annotation: {'fxsnn': ...}`` comments, from ``node.meta["custom"]``).
    """
    annotate_sites_(gm)
    rows = []
    for n in gm.graph.nodes:
        rec = n.meta.get(SITE_KEY) or n.meta.get(ANALOG_KEY)
        rows.append([n.op, n.name, n.target, n.args, n.kwargs, "" if rec is None else str(rec)])
    text = tabulate(rows, headers=["opcode", "name", "target", "args", "kwargs", "fxsnn"])
    print(text)
    return text
