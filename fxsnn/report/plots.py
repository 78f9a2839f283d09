"""Figures of an :func:`fxsnn.analyze` report (matplotlib, the optional ``plot`` extra).

Both functions draw on matplotlib's Agg canvas directly (no ``pyplot``), so
they never change the backend or the figures of an interactive session.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..io.paths import check_writable
from .analysis import Report, resolve_layers

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_distributions", "plot_layers"]

ANN_COLOR = "tab:blue"
SNN_COLOR = "tab:red"


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "fxsnn's plots need matplotlib, an optional extra: pip install 'fxsnn[plot]' (or pip install matplotlib)"
        ) from exc
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _check(report: Report, path: str | os.PathLike) -> None:
    if not isinstance(report, Report):
        raise TypeError(f"expected the Report returned by fxsnn.analyze; got {type(report).__name__}")
    if not os.fspath(path).lower().endswith(".png"):
        raise ValueError(f"plots are written as PNG; give a path ending in .png, got {os.fspath(path)!r}")
    check_writable(path)


def plot_distributions(
    report: Report,
    layers: str | int | Sequence[str | int] | None = None,
    path: str | os.PathLike = "distributions.png",
    *,
    bins: int = 50,
    log: bool = False,
) -> str:
    """Write a PNG of ANN activations (blue) against SNN average firing rates (red), one panel per site.

    The view of the paper's Figures 1, 3 and 4: per site, histograms (as
    densities, on shared bins from 0 to the largest value) of the ANN's ReLU
    output ``a`` and the SNN's rate ``r = k·θ_post/T``, from the paired
    samples in ``report.values``; the legend gives each side's sparsity
    (fraction of zeros over all the data), the title MAE and W1.

    Args:
        report: from :func:`fxsnn.analyze`.
        layers: analysed site names or indices into ``report.sites``; ``None`` for all.
        path: the ``.png`` to write; its directory must exist.
        bins: histogram bins; ``log``: logarithmic density axis.

    Returns the path written. Example::

        >>> fxsnn.report.plot_distributions(rep, ["layer1.0.relu", "layer3.2.relu_1"], "dist.png")
    """
    names = _distribution_sites(report, layers, path, bins)
    cols = min(len(names), 3)
    rows = -(-len(names) // cols)
    fig = _figure(4.2 * cols, 3.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        _histograms(ax, report, name, bins=bins, log=log)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(f"ANN activations vs SNN average firing rates (T = {report.T})", fontsize=10)
    fig.savefig(path, dpi=110)
    return os.fspath(path)


def _distribution_sites(
    report: Report, layers: str | int | Sequence[str | int] | None, path: str | os.PathLike, bins: int
) -> list[str]:
    """The sites :func:`plot_distributions` draws, after checking its arguments."""
    _check(report, path)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"plot_distributions: bins must be an integer >= 2; got {bins!r}")
    names = resolve_layers(layers, [r.site for r in report.sites], where="fxsnn.report.plot_distributions")
    empty = [n for n in names if report.values[n][0].size == 0]
    if empty:
        raise ValueError(
            f"fxsnn.report.plot_distributions: no samples were kept for {empty[0]!r}; run fxsnn.analyze with max_samples > 0"
        )
    return names


def _histograms(ax: Axes, report: Report, name: str, *, bins: int, log: bool) -> None:
    """One panel: the ANN's and the SNN's histograms of site ``name`` on shared bins."""
    a, r = report.values[name]
    row = report.site(name)
    hi = float(max(a.max(), r.max(), 1e-12))
    edges = np.linspace(0.0, hi, bins + 1)
    ax.hist(
        a,
        bins=edges,
        density=True,
        color=ANN_COLOR,
        alpha=0.55,
        label=f"ANN activation (sparsity {100 * row.ann_sparsity:.1f} %)",
    )
    ax.hist(
        r,
        bins=edges,
        density=True,
        color=SNN_COLOR,
        alpha=0.55,
        label=f"SNN firing rate (sparsity {100 * row.snn_sparsity:.1f} %)",
    )
    if log:
        ax.set_yscale("log")
    ax.set_title(f"{name}\nMAE {row.mae:.3g}   W1 {row.wasserstein:.3g}", fontsize=9)
    ax.set_xlabel("value")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)


def plot_layers(report: Report, path: str | os.PathLike = "layers.png") -> str:
    """Write a PNG with two bar charts: spikes per neuron per step of every site, and operations per weighted layer.

    Top: ``mean(k)/T`` per ParallelIF site (``report.spike_rates``). Bottom
    (log scale): per weighted layer, the ANN's MACs (blue) against the SNN's
    synaptic operations ``SOP_l = T · r_in · FLOPs_l`` (red; layers with
    analog input run as MACs and are drawn hatched). Returns the path written.
    """
    _check(report, path)
    fig = _figure(max(6.0, 0.35 * max(len(report.spike_rates), len(report.energy)) + 2), 6.5)
    top, bottom = fig.subplots(2, 1)
    names = list(report.spike_rates)
    x = np.arange(len(names))
    top.bar(x, [report.spike_rates[n] for n in names], color=SNN_COLOR)
    top.set_xticks(x, names, rotation=70, fontsize=7)
    top.set_ylabel("spikes / neuron / step")
    top.set_title(f"SNN firing rate per site (T = {report.T})", fontsize=10)
    layers = list(report.energy)
    x = np.arange(len(layers))
    ann = [max(r.macs, 1) for r in layers]
    snn = [max(r.sops if r.sops is not None else r.macs, 1) for r in layers]
    from matplotlib.patches import Patch

    bottom.bar(x - 0.2, ann, width=0.4, color=ANN_COLOR)
    bars = bottom.bar(x + 0.2, snn, width=0.4, color=SNN_COLOR)
    for bar, r in zip(bars, layers):
        if r.input == "analog":
            bar.set_hatch("//")
            bar.set_facecolor("white")
            bar.set_edgecolor(SNN_COLOR)
    bottom.set_yscale("log")
    bottom.set_xticks(x, [r.layer for r in layers], rotation=70, fontsize=7)
    bottom.set_ylabel("operations per input")
    bottom.legend(
        handles=[
            Patch(color=ANN_COLOR, label="ANN MACs"),
            Patch(color=SNN_COLOR, label="SNN SOPs (spike input)"),
            Patch(facecolor="white", edgecolor=SNN_COLOR, hatch="//", label="SNN MACs (analog input)"),
        ],
        fontsize=7,
    )
    fig.savefig(path, dpi=110)
    return os.fspath(path)
