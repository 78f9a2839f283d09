"""Synaptic operations and energy of a lowered network (the accounting behind :func:`fxsnn.analyze`).

Per weighted layer ``l`` (``nn.Conv1d/2d/3d``, ``nn.ConvTranspose*``, ``nn.Linear``),
per sample:

- ``FLOPs_l``: its multiply-accumulates (MACs) for one input, as in the ANN
  (conv: output elements × ``C_in/groups · k_h · k_w``; linear: output
  elements × ``in_features``);
- if its input comes from ParallelIF neurons (through any chain of ops that
  are not weighted layers — pooling, flatten, BN, padding, ...), it receives
  spikes, and its synaptic operations are ``SOP_l = T · r_in · FLOPs_l``
  with ``r_in`` the input's spikes per neuron per time step. A spike carries
  ``θ_post``, but that factor folds into the next layer's weights
  (``W·diag(θ_post)``), so each spike costs one accumulate (AC) per synapse,
  not a multiply-accumulate;
- if its input is analog — the network input (the first layer), the
  output of another weighted layer with no neuron in between, or anything
  that passed an analog op of a hybrid (a GELU, a Sigmoid gate, ...;
  :func:`fxsnn.graph.sites.find_hybrid_ops`) — it runs as MACs (the analog
  ops' own arithmetic is not counted). The network input is the same at every time step, so the first
  layer's MACs are counted once (rate mode runs it once; spike mode repeats
  it ``T`` times, a cost an implementation need not pay).

Energy with the 45 nm constants of Horowitz (ISSCC 2014), E_MAC = 4.6 pJ and
E_AC = 0.9 pJ (configurable through :class:`EnergyModel`)::

    E_ANN = E_MAC · Σ_l FLOPs_l
    E_SNN = E_MAC · Σ_{l analog} FLOPs_l + E_AC · Σ_{l spiking} SOP_l

Neuron updates, memory traffic and the additions of residual sums are not
counted (the usual convention in the SNN literature).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, fx, nn

from ..graph.patterns import CONV_TRANSPOSES as _CONVT
from ..graph.patterns import CONVS as _CONV
from ..graph.patterns import WEIGHTED
from ..graph.sites import ANALOG_KEY, EXACT_KINDS, AnalogOp
from ..nn import ParallelIF, TimeExpand

__all__ = [
    "EnergyModel",
    "SynapticLayer",
    "WEIGHTED_LAYERS",
    "layer_macs",
    "synaptic_inputs",
    "format_energy",
    "energy_table",
]

#: Module types whose multiply-accumulates are counted (the one table, in :mod:`fxsnn.graph.patterns`).
WEIGHTED_LAYERS = WEIGHTED


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation, in picojoules: ``e_mac`` (multiply-accumulate) and ``e_ac`` (accumulate).

    Defaults are the 45 nm CMOS figures (32-bit float) of Horowitz, ISSCC 2014:
    4.6 pJ per MAC, 0.9 pJ per AC.

    Example::

        >>> fxsnn.analyze(ann, snn, data, energy=fxsnn.report.EnergyModel(e_mac=3.1, e_ac=0.1))
    """

    e_mac: float = 4.6
    e_ac: float = 0.9

    def __post_init__(self) -> None:
        for name in ("e_mac", "e_ac"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"EnergyModel: {name} must be a finite number of picojoules >= 0; got {v!r}")


@dataclass(frozen=True)
class SynapticLayer:
    """One weighted layer of :func:`fxsnn.analyze`'s energy table (all counts per sample).

    Attributes:
        layer: qualified module path.
        op: ``conv``, ``convT`` or ``linear``.
        input: ``spikes`` (fed by ParallelIF neurons) or ``analog``.
        sources: the ParallelIF sites that feed it (empty for analog input).
        macs: ``FLOPs_l``, its multiply-accumulates for one sample (one time step).
        input_rate: ``r_in``, spikes per input neuron per time step (``None`` if analog).
        sops: ``SOP_l = T · r_in · FLOPs_l`` (``None`` if analog).
        ann_energy: ``E_MAC · FLOPs_l`` in joules.
        snn_energy: ``E_AC · SOP_l`` (spiking) or ``E_MAC · FLOPs_l`` (analog), in joules.
    """

    layer: str
    op: str
    input: str
    sources: tuple[str, ...]
    macs: int
    input_rate: float | None
    sops: float | None
    ann_energy: float
    snn_energy: float


def _op(m: nn.Module) -> str:
    return "linear" if isinstance(m, nn.Linear) else "convT" if isinstance(m, _CONVT) else "conv"


def layer_macs(m: nn.Module, inp: Tensor, out: Tensor) -> int:
    """Multiply-accumulates of one call of a weighted layer, per sample (dim 0 is the batch, or time × batch)."""
    per = max(out.shape[0], 1)
    if isinstance(m, _CONV):
        k = math.prod(m.kernel_size) * (m.in_channels // m.groups)
        return out.numel() // per * k
    if isinstance(m, _CONVT):
        k = math.prod(m.kernel_size) * (m.out_channels // m.groups)
        return inp.numel() // max(inp.shape[0], 1) * k
    if isinstance(m, nn.Linear):
        return out.numel() // per * m.in_features
    raise TypeError(f"layer_macs: {type(m).__name__} is not a counted layer type {WEIGHTED_LAYERS}")


def synaptic_inputs(gm: fx.GraphModule) -> dict[str, tuple[tuple[str, ...], bool]]:
    """``{weighted module path: (ParallelIF sources, analog)}`` for every counted layer in ``gm``.

    Walks back from each weighted layer's input through every node that is
    not itself a weighted layer, a neuron, or the network input. ``analog`` is
    true when any path reaches the network input or another weighted layer
    without passing a neuron, or passes an analog op of a hybrid (its values are
    no spikes); such a layer is counted as MACs.
    """
    modules = dict(gm.named_modules())
    out: dict[str, tuple[set, bool]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), WEIGHTED_LAYERS):
            continue
        sources: set[str] = set()
        analog = False
        seen: set[fx.Node] = set()
        todo = [a for a in node.all_input_nodes[:1]]
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            m = modules.get(n.target) if n.op == "call_module" else None
            if isinstance(m, ParallelIF):
                sources.add(n.target)
            elif n.op == "placeholder" or isinstance(m, (TimeExpand,) + WEIGHTED_LAYERS):
                analog = True
            elif n.op != "get_attr":
                analog = analog or _hybrid_op(n)
                todo.extend(n.all_input_nodes)
        prev_sources, prev_analog = out.get(node.target, (set(), False))
        out[node.target] = (prev_sources | sources, prev_analog or analog or not sources)
    return {k: (tuple(sorted(s)), a) for k, (s, a) in out.items()}


def _hybrid_op(node: fx.Node) -> bool:
    op = node.meta.get(ANALOG_KEY)
    return isinstance(op, AnalogOp) and op.kind not in EXACT_KINDS


def format_energy(joules: float) -> str:
    """``1.23e-6`` → ``'1.23 µJ'`` (J, mJ, µJ, nJ, pJ)."""
    for unit, scale in (("J", 1.0), ("mJ", 1e-3), ("µJ", 1e-6), ("nJ", 1e-9)):
        if abs(joules) >= scale:
            return f"{joules / scale:.3g} {unit}"
    return f"{joules / 1e-12:.3g} pJ"


def energy_table(
    gm: fx.GraphModule,
    macs: dict[str, int],
    spikes: dict[str, tuple[float, int]],
    T: int,
    model: EnergyModel,
) -> list[SynapticLayer]:
    """One :class:`SynapticLayer` per weighted layer that ran, in graph order.

    ``macs``: ``{layer: FLOPs_l per sample}`` (from :func:`layer_macs`);
    ``spikes``: ``{site: (Σ k, neuron·samples)}`` — total spike count of a
    ParallelIF site over the data and the number of (neuron, input) pairs, so
    that its rate is ``Σk / (neuron·samples · T)``.
    """
    rows = []
    for layer, (sources, analog) in synaptic_inputs(gm).items():
        if layer not in macs:
            continue  # a weighted module that the forward never called
        flops = macs[layer]
        op = _op(gm.get_submodule(layer))
        e_ann = model.e_mac * 1e-12 * flops
        if analog:
            rows.append(SynapticLayer(layer, op, "analog", sources, flops, None, None, e_ann, e_ann))
            continue
        total = sum(spikes[s][0] for s in sources)
        steps = sum(spikes[s][1] for s in sources) * T
        r_in = total / steps if steps else 0.0
        sops = T * r_in * flops
        rows.append(SynapticLayer(layer, op, "spikes", sources, flops, r_in, sops, e_ann, model.e_ac * 1e-12 * sops))
    return rows
