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

from . import models, nn, passes
from ._version import __version__ as __version__
from .calibrate.finetune import NonFiniteLossError, TrainReport
from .calibrate.front import front_end
from .calibrate.ranges import calibrate, calibrate_da, recording
from .calibrate.stage1 import recalibrate_bn, reestimate_bn_stats
from .calibrate.stage2 import tune_delta_b
from .config import ConvertConfig
from .convert import convert
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
