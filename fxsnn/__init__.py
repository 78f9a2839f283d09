"""fxsnn: turn a trained PyTorch ReLU network into a parallel spiking neural network via torch.fx.

The flow (each rewrite returns a new GraphModule; data steps take any iterable of batches)::

    gm  = fxsnn.trace(model)
    gm  = fxsnn.passes.insert_recorders(gm)          # ReLU sites -> range recorders
    gm  = fxsnn.calibrate(gm, data)                  # theta per channel
    gm  = fxsnn.passes.to_da_qcfs(gm, levels=T)      # DA-QCFS activations (Eq. 4)
    gm  = fxsnn.calibrate_da(gm, data)               # psi_DA, phi_DA (Alg. 1)
    snn = fxsnn.passes.lower_to_paraif(gm, T=T)      # parallel IF neurons (Eq. 5-8, 15-18)

The first five lines are ``fxsnn.front_end(model, data, levels=T)``.
"""

# Attributes load on first use (PEP 562), so that `import fxsnn` / the `fxsnn` command start without importing
# torch: the command line checks its arguments first (issue 9, item 18).
import importlib
from typing import TYPE_CHECKING

from ._version import __version__ as __version__

_EXPORTS = {
    "NonFiniteLossError": ".calibration.finetune",
    "TrainReport": ".calibration.finetune",
    "front_end": ".calibration.front",
    "calibrate": ".calibration.ranges",
    "calibrate_da": ".calibration.ranges",
    "recording": ".calibration.ranges",
    "recalibrate_bn": ".calibration.stage1",
    "reestimate_bn_stats": ".calibration.stage1",
    "tune_delta_b": ".calibration.stage2",
    "ConvertConfig": ".config",
    "convert": ".conversion",
    "CalibrationError": ".errors",
    "ConversionError": ".errors",
    "DataError": ".errors",
    "FxsnnError": ".errors",
    "ModeError": ".errors",
    "TraceError": ".errors",
    "rate_mode_blockers": ".graph.rate",
    "Site": ".graph.sites",
    "SiteTable": ".graph.sites",
    "find_sites": ".graph.sites",
    "trace": ".graph.tracing",
    "SaveFileError": ".io.saving",
    "load": ".io.saving",
    "read_header": ".io.saving",
    "save": ".io.saving",
    "get_mode": ".modes",
    "neurons": ".modes",
    "set_mode": ".modes",
    "time_steps": ".modes",
    "SerialSimulator": ".nn.serial",
    "to_serial": ".passes.serial",
    "Report": ".report.analysis",
    "SiteReport": ".report.analysis",
    "analyze": ".report.analysis",
    "EnergyModel": ".report.energy",
    "SynapticLayer": ".report.energy",
    "EvalResult": ".report.evaluation",
    "evaluate": ".report.evaluation",
    "plot_distributions": ".report.plots",
    "plot_layers": ".report.plots",
    "NetworkSummary": ".report.summarize",
    "SiteSummary": ".report.summarize",
    "summary": ".report.summarize",
}

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from . import models, nn, passes
    from ._version import __version__ as __version__
    from .calibration.finetune import NonFiniteLossError, TrainReport
    from .calibration.front import front_end
    from .calibration.ranges import calibrate, calibrate_da, recording
    from .calibration.stage1 import recalibrate_bn, reestimate_bn_stats
    from .calibration.stage2 import tune_delta_b
    from .config import ConvertConfig
    from .conversion import convert
    from .errors import CalibrationError, ConversionError, DataError, FxsnnError, ModeError, TraceError
    from .graph.rate import rate_mode_blockers
    from .graph.sites import Site, SiteTable, find_sites
    from .graph.tracing import trace
    from .io.saving import SaveFileError, load, read_header, save
    from .modes import get_mode, neurons, set_mode, time_steps
    from .nn.serial import SerialSimulator
    from .passes.serial import to_serial
    from .report.analysis import Report, SiteReport, analyze
    from .report.energy import EnergyModel, SynapticLayer
    from .report.evaluation import EvalResult, evaluate
    from .report.plots import plot_distributions, plot_layers
    from .report.summarize import NetworkSummary, SiteSummary, summary


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    try:
        value = importlib.import_module(module, __name__) if module else importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if module or exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    if module:
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "trace",
    "passes",
    "nn",
    "models",
    "evaluate",
    "EvalResult",
    "find_sites",
    "Site",
    "SiteTable",
    "front_end",
    "calibrate",
    "calibrate_da",
    "recording",
    "set_mode",
    "get_mode",
    "time_steps",
    "neurons",
    "rate_mode_blockers",
    "to_serial",
    "SerialSimulator",
    "FxsnnError",
    "TraceError",
    "ConversionError",
    "CalibrationError",
    "ModeError",
    "DataError",
    "recalibrate_bn",
    "reestimate_bn_stats",
    "tune_delta_b",
    "convert",
    "ConvertConfig",
    "NonFiniteLossError",
    "TrainReport",
]
__all__ += [
    "summary",
    "NetworkSummary",
    "SiteSummary",
    "analyze",
    "Report",
    "SiteReport",
    "EnergyModel",
    "SynapticLayer",
    "plot_distributions",
    "plot_layers",
    "save",
    "load",
    "read_header",
    "SaveFileError",
]
