"""fxsnn: turn a trained PyTorch ReLU network into a parallel spiking neural network via torch.fx.

The flow (each rewrite returns a new GraphModule; data steps take any iterable of batches)::

    gm  = fxsnn.trace(model)
    gm  = fxsnn.passes.insert_recorders(gm)          # ReLU sites -> range recorders
    gm  = fxsnn.calibrate(gm, data)                  # theta per channel
    gm  = fxsnn.passes.to_da_qcfs(gm, levels=T)      # DA-QCFS activations (Eq. 4)
    gm  = fxsnn.calibrate_da(gm, data)               # psi_DA, phi_DA (Alg. 1)
    snn = fxsnn.passes.lower_to_paraif(gm, T=T)      # parallel IF neurons (Eq. 5-8, 15-18)
"""
from . import models, nn, passes, probes
from .calibration import calibrate, calibrate_da, recording
from .evaluate import EvalResult, evaluate
from .errors import CalibrationError, ConversionError, DataError, FxsnnError, ModeError, TraceError
from .modes import get_mode, neurons, rate_mode_blockers, set_mode, time_steps
from .serial import SerialSimulator, to_serial
from .sites import Site, SiteTable, find_sites
from .tracing import trace
from .finetune import NonFiniteLossError, TrainReport
from .stage1 import recalibrate_bn, reestimate_bn_stats
from .stage2 import tune_delta_b
from .convert import ConvertConfig, convert
from .summary import NetworkSummary, SiteSummary, summary
from .analysis import Report, SiteReport, analyze
from .energy import EnergyModel, SynapticLayer
from .plots import plot_distributions, plot_layers
from .saving import SaveFileError, load, read_header, save

__version__ = "0.1.0"

__all__ = [
    "trace", "passes", "nn", "models", "probes", "evaluate", "EvalResult", "find_sites", "Site", "SiteTable", "calibrate", "calibrate_da", "recording",
    "set_mode", "get_mode", "time_steps", "neurons", "rate_mode_blockers", "to_serial", "SerialSimulator",
    "FxsnnError", "TraceError", "ConversionError", "CalibrationError", "ModeError", "DataError",
    "recalibrate_bn", "reestimate_bn_stats", "tune_delta_b", "convert", "ConvertConfig", "NonFiniteLossError", "TrainReport",
]
__all__ += [
    "summary", "NetworkSummary", "SiteSummary", "analyze", "Report", "SiteReport", "EnergyModel", "SynapticLayer",
    "plot_distributions", "plot_layers", "save", "load", "read_header", "SaveFileError",
]
