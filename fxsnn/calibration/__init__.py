"""Data steps: activation ranges, DA error calibration (Alg. 1), Stage 1 (Alg. 2), Stage 2 (Alg. 3), the fine-tuning loop.

Unsuffixed steps return a new GraphModule and leave their input untouched; the ``_`` versions work in place.
Example::

    from fxsnn.calibration import Stage1Config, calibrate_, front_end
"""

from .config import Stage1Config, Stage2Config, TrainSpec
from .distill import im_adapted_teacher
from .finetune import NonFiniteLossError, TrainReport
from .front import front_end
from .ranges import calibrate, calibrate_, calibrate_da, calibrate_da_, recording
from .stage1 import recalibrate_bn, reestimate_bn_stats, reestimate_bn_stats_
from .stage2 import tune_delta_b
from .state import preserved_state

__all__ = [
    "recording",
    "preserved_state",
    "TrainReport",
    "NonFiniteLossError",
    "front_end",
    "calibrate",
    "calibrate_",
    "calibrate_da",
    "calibrate_da_",
    "reestimate_bn_stats",
    "reestimate_bn_stats_",
    "recalibrate_bn",
    "tune_delta_b",
    "im_adapted_teacher",
    "Stage1Config",
    "Stage2Config",
    "TrainSpec",
]
