"""fxsnn: turn a trained PyTorch ReLU network into a parallel spiking neural network via torch.fx.

The flow (rewrites return a new GraphModule; data steps take any iterable of batches and return a copy)::

    gm  = fxsnn.trace(model)
    gm  = fxsnn.passes.insert_recorders(gm)          # ReLU sites -> range recorders
    gm  = fxsnn.calibrate(gm, data)                  # theta per channel
    gm  = fxsnn.passes.to_da_qcfs(gm, levels=T)      # DA-QCFS activations (Eq. 4)
    gm  = fxsnn.calibrate_da(gm, data)               # psi_DA, phi_DA (Alg. 1)
    gm  = fxsnn.recalibrate_bn(gm, data)             # Stage 1 (Alg. 2)
    snn = fxsnn.passes.lower_to_paraif(gm, T=T)      # parallel IF neurons (Eq. 5-8, 15-18)
    snn = fxsnn.tune_delta_b(snn, data)              # Stage 2 (Alg. 3)

The first five lines are ``fxsnn.front_end(model, data, levels=T)``; all of it is ``fxsnn.convert``.
Everything else lives in its subpackage: ``fxsnn.graph``, ``fxsnn.passes``, ``fxsnn.nn``,
``fxsnn.calibration``, ``fxsnn.modes``, ``fxsnn.report``, ``fxsnn.io``, ``fxsnn.models``, ``fxsnn.testing``.
"""

# Attributes load on first use, so that `import fxsnn` / the `fxsnn` command start without importing torch:
# the command line checks its arguments first.
from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from ._version import __version__ as __version__

_EXPORTS = {
    "trace": ".graph.tracing",
    "find_sites": ".graph.sites",
    "front_end": ".calibration.front",
    "calibrate": ".calibration.ranges",
    "calibrate_da": ".calibration.ranges",
    "recalibrate_bn": ".calibration.stage1",
    "tune_delta_b": ".calibration.stage2",
    "convert": ".conversion",
    "ConvertConfig": ".config",
    "set_mode": ".modes",
    "evaluate": ".report.evaluation",
    "summary": ".report.summarize",
    "analyze": ".report.analysis",
    "save": ".io.saving",
    "load": ".io.saving",
    "FxsnnError": ".errors",
    "TraceError": ".errors",
    "ConversionError": ".errors",
    "CalibrationError": ".errors",
    "ModeError": ".errors",
    "DataError": ".errors",
    "NonFiniteLossError": ".calibration.finetune",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from . import nn, passes
    from .calibration.finetune import NonFiniteLossError
    from .calibration.front import front_end
    from .calibration.ranges import calibrate, calibrate_da
    from .calibration.stage1 import recalibrate_bn
    from .calibration.stage2 import tune_delta_b
    from .config import ConvertConfig
    from .conversion import convert
    from .errors import CalibrationError, ConversionError, DataError, FxsnnError, ModeError, TraceError
    from .graph.sites import find_sites
    from .graph.tracing import trace
    from .io.saving import load, save
    from .modes import set_mode
    from .report.analysis import analyze
    from .report.evaluation import evaluate
    from .report.summarize import summary

__all__ = [*_EXPORTS, "passes", "nn"]
