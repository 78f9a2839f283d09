"""``fxsnn.summary``: what the converter did to each activation site, as a table."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..graph.edit import require_graph_module
from ..graph.sites import EXACT_KINDS, AnalogTable, Site, find_analog_ops, find_sites
from ..nn import DAQCFS, QCFS, ActivationRecorder, ParallelIF
from .table import Rows

__all__ = ["summary", "SiteSummary", "NetworkSummary"]

Range = tuple[float, float]


@dataclass(frozen=True)
class SiteSummary:
    """One activation site of :func:`fxsnn.summary`.

    Attributes:
        site: qualified module path (the same at every stage).
        kind: ``ReLU`` (or a functional spelling), ``recorder``, ``QCFS``, ``DA-QCFS`` or ``ParallelIF``.
        pattern: producer chain (``conv→bn→relu``, ``add→relu``, ...).
        channels: channels ``C`` (dim 1), ``None`` if unknown.
        theta: ``(min, max)`` over channels of θ (``θ_pre`` for a ParallelIF);
            ``None`` before calibration.
        levels: quantisation levels ``L`` of a QCFS / DA-QCFS site.
        T: time steps of a ParallelIF site.
        psi_da: ``(min, max)`` of the pre-activation shift ψ_DA (DA sites).
        phi_da: ``(min, max)`` of the post-activation shift φ_DA
            (``θ_post − θ_pre`` for a lowered site).
        delta_b: ``(min, max)`` of the Stage-2 bias Δb (ParallelIF).
        delta_b_params: number of Δb entries (``C`` for a ParallelIF, else 0).
        trainable: parameters of the site module with ``requires_grad``.
    """

    site: str
    kind: str
    pattern: str
    channels: int | None
    theta: Range | None
    levels: int | None
    T: int | None
    psi_da: Range | None
    phi_da: Range | None
    delta_b: Range | None
    delta_b_params: int
    trainable: int


_HEADERS = {
    "site": "site",
    "kind": "kind",
    "pattern": "pattern",
    "channels": "C",
    "theta": "θ range",
    "levels": "L",
    "T": "T",
    "psi_da": "ψ_DA range",
    "phi_da": "φ_DA range",
    "delta_b": "Δb range",
    "trainable": "trainable",
}


class NetworkSummary(Rows):
    """The rows of :func:`fxsnn.summary` plus network totals.

    Attributes (besides the rows): ``delta_b_params`` (Δb entries in the whole
    network, the paper's "about 7.6k for ResNet-34"), ``site_trainable``
    (trainable parameters inside the site modules), ``network_params`` (all
    parameters), ``stage`` (the most converted site kind present) and
    ``analog`` (:func:`fxsnn.graph.sites.find_analog_ops`: the other nonlinear
    ops, which do not spike) and ``hybrid`` (those of them that make the network a
    hybrid: all but the exact MaxPools, :func:`fxsnn.graph.sites.find_hybrid_ops`).
    """

    headers = _HEADERS

    def __new__(cls, rows: Iterable[SiteSummary], *, network_params: int, analog: Iterable = ()) -> NetworkSummary:
        self = super().__new__(cls, rows)
        self.network_params = int(network_params)
        self.analog = AnalogTable(analog)
        self.hybrid = AnalogTable(op for op in self.analog if op.kind not in EXACT_KINDS)
        return self

    def not_spiking(self) -> str:
        """One line naming the nonlinear ops that stay analog (``""`` when there are none)."""
        counts: dict[str, int] = {}
        for op in self.analog:
            counts[op.kind] = counts.get(op.kind, 0) + 1
        if not counts:
            return ""
        kinds = ", ".join(f"{n} × {k}" for k, n in counts.items())
        return f"not spiking (analog): {kinds}; fxsnn.graph.sites.find_analog_ops(gm) lists them"

    @property
    def delta_b_params(self) -> int:
        return sum(r.delta_b_params for r in self)

    @property
    def site_trainable(self) -> int:
        return sum(r.trainable for r in self)

    @property
    def stage(self) -> str:
        order = ["ParallelIF", "DA-QCFS", "QCFS", "recorder"]
        kinds = {r.kind for r in self}
        return next((k for k in order if k in kinds), "ReLU" if self else "none")

    def totals(self) -> str:
        """The totals line printed under the table."""
        return (
            f"{len(self)} sites (stage: {self.stage}); Δb parameters: {self.delta_b_params:,}; "
            f"trainable in sites: {self.site_trainable:,}; network parameters: {self.network_params:,}"
        )

    def __str__(self) -> str:
        cols = [c for c in self.headers if any(getattr(r, c) is not None for r in self) or c in ("site", "kind")]
        shown = Rows(self, {c: self.headers[c] for c in cols})
        lines = (shown.table(), self.totals(), self.not_spiking(), self.hybrid.hybrid_note())
        return "\n".join(line for line in lines if line)

    def to_dict(self) -> dict:
        """``{"sites": [row dicts], "totals": {..., "hybrid": bool}, "analog": [{"kind", "node", "path"}, ...]}``."""
        return {
            "sites": super().to_dict(),
            "totals": {
                "sites": len(self),
                "stage": self.stage,
                "delta_b_params": self.delta_b_params,
                "site_trainable": self.site_trainable,
                "network_params": self.network_params,
                "hybrid": bool(self.hybrid),
            },
            "analog": self.analog.to_dict(),
        }


def _range(t: torch.Tensor | None) -> Range | None:
    if t is None or t.numel() == 0:
        return None
    t = t.detach()
    return float(t.min()), float(t.max())


def _recorder_theta(m: ActivationRecorder) -> torch.Tensor | None:
    # theta() raises only for a recorder without data; every channel dead gives θ = 1 with a warning
    return m.theta() if m.has_data else None


def _site_row(site: Site, m: nn.Module | None) -> SiteSummary:
    theta = levels = T = psi = phi = db = None
    n_db = 0
    if isinstance(m, ActivationRecorder):
        theta = _recorder_theta(m)
    elif isinstance(m, DAQCFS):
        theta, levels, psi, phi = m.theta, m.levels, m.psi_da, m.phi_da
    elif isinstance(m, QCFS):
        theta, levels = m.theta, m.levels
    elif isinstance(m, ParallelIF):
        theta, T, db, n_db = m.theta_pre, m.T, m.delta_b, m.delta_b.numel()
        if m.has_da:
            psi, phi = m.psi_da, m.theta_post - m.theta_pre
    trainable = sum(p.numel() for p in m.parameters() if p.requires_grad) if m is not None else 0
    return SiteSummary(
        site.name,
        site.kind,
        site.pattern,
        site.channels,
        _range(theta),
        levels,
        T,
        _range(psi),
        _range(phi),
        _range(db),
        n_db,
        trainable,
    )


def summary(gm: nn.Module) -> NetworkSummary:
    """A table of every activation site of ``gm`` at whatever stage it is, with totals.

    Per site: module path, kind, producer pattern, channels ``C``, the θ range
    over channels, ``L`` (QCFS levels) or ``T`` (ParallelIF time steps), the
    ranges of ψ_DA, φ_DA and Δb, and the site's trainable parameter count.
    Totals: Δb parameters in the network (``Σ_l C_l`` over ParallelIF sites —
    Stage 2 adds ``O(C_l)`` per layer, independent of ``T``), trainable
    parameters in sites, all network parameters; then a line naming the
    nonlinear ops that stay analog, if any, and, for a hybrid, a note saying so with
    the table of the ops that make it one (kind, node, module path). Columns that are empty for
    every site are not printed. A plain ``nn.Module`` is traced first.

    Example::

        >>> s = fxsnn.summary(snn)
        >>> print(s)            # the table and a totals line
        >>> s.delta_b_params    # e.g. 7616 for torchvision's ResNet-34
        >>> s.to_csv("summary.csv")
    """
    gm = require_graph_module(gm, where="fxsnn.summary")
    modules = dict(gm.named_modules())
    rows = [_site_row(s, modules.get(s.name)) for s in find_sites(gm)]
    return NetworkSummary(rows, network_params=sum(p.numel() for p in gm.parameters()), analog=find_analog_ops(gm))
