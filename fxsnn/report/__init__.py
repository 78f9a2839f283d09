"""What a converted network did: evaluation, summaries, ANN-vs-SNN analysis, energy, plots, tables, stage reports.

Names load on first use (``fxsnn.report.Report``), so importing the package costs nothing.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "evaluate": ".evaluation",
    "EvalResult": ".evaluation",
    "summary": ".summarize",
    "NetworkSummary": ".summarize",
    "SiteSummary": ".summarize",
    "analyze": ".analysis",
    "Report": ".analysis",
    "SiteReport": ".analysis",
    "SerialGap": ".analysis",
    "EnergyModel": ".energy",
    "SynapticLayer": ".energy",
    "plot_distributions": ".plots",
    "plot_layers": ".plots",
    "spike_counts": ".probes",
    "Rows": ".table",
    "StageReport": ".stages",
    "StageReports": ".stages",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .analysis import Report, SerialGap, SiteReport, analyze
    from .energy import EnergyModel, SynapticLayer
    from .evaluation import EvalResult, evaluate
    from .plots import plot_distributions, plot_layers
    from .probes import spike_counts
    from .stages import StageReport, StageReports
    from .summarize import NetworkSummary, SiteSummary, summary
    from .table import Rows

__all__ = list(_EXPORTS)
