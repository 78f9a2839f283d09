"""Label-free teachers against labelled references: validation top-1 of the adapted ANN alone (no conversion).

The label-free conversion distils from a teacher (``ConvertConfig.teacher``), and a distilled student rarely
passes its teacher, so the teacher bounds label-free calibration. On the held-out split of
``benchmarks/validate_defaults.py`` (8,000 calibration images of train_10k, 2,000 validation images; never the
test set) this trains each recipe on the calibration images and prints its top-1 on the validation images:

- ``model``: the ANN as it is; ``im``: ``fxsnn.calibration.distill.im_adapted_teacher`` at the defaults;
- ``labels-bn``: the BN affine terms tuned with labels for one epoch (``fxsnn.recalibrate_bn``,
  ``train_weights=False``): the ``"labels"`` teacher the labelled conversion distils from by default
  (``fxsnn.conversion.teacher_for``); ``labels-bn-2``: the same for two epochs of that schedule;
  ``labels-weights``: one epoch of that schedule with the convolution / linear weights tuned too
  (``train_weights=True``); ``labels-stage1``: Stage 1's defaults applied to the ANN (weights tuned, two epochs);
- ``im-all-1e-4``, ``im-all-3e-4``: information maximisation on every parameter at that rate, one epoch;
- ``im-pl-<β>-<epochs>``: information maximisation plus β times the cross-entropy to the teacher's own
  arg-max (SHOT's pseudo-label term, Liang et al., 2020) on the BN affine terms at 1e-3.

    python benchmarks/teacher_study.py                       # every recipe (about 6 min on 2 cores)
    python benchmarks/teacher_study.py --recipes model im    # a few

Exits cleanly (status 0, with a message) when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tabulate import tabulate

import fxsnn
from fxsnn.calibration import Stage1Config, TrainSpec, distill
from fxsnn.calibration.finetune import fine_tune
from fxsnn.conversion import teacher_for

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import held_out_setup  # noqa: E402

PSEUDO_LABEL = {"im-pl-0.3-1": (0.3, 1), "im-pl-0.3-2": (0.3, 2), "im-pl-0.3-3": (0.3, 3), "im-pl-0.3-5": (0.3, 5)}
PSEUDO_LABEL["im-pl-1.0-2"] = (1.0, 2)
RECIPES = [
    "model",
    "im",
    "labels-bn",
    "labels-bn-2",
    "labels-weights",
    "labels-stage1",
    "im-all-1e-4",
    "im-all-3e-4",
    *PSEUDO_LABEL,
]


def information_maximised(model, cal, *, lr: float, epochs: int, every_parameter: bool, beta: float = 0.0):
    """A frozen copy of ``model`` tuned on ``cal``'s images by ``im_loss + β·CE(z, argmax z)``.

    ``every_parameter``: all parameters, else the BatchNorm affine terms only (what ``im_adapted_teacher`` tunes).
    """
    teacher = distill.frozen_teacher(model)
    params = list(teacher.parameters()) if every_parameter else distill._affine_batchnorm_params(teacher)
    for p in params:
        p.requires_grad_(True)

    def loss(z, _target):
        pseudo = F.cross_entropy(z.float(), z.detach().argmax(dim=1)) if beta else 0.0
        return distill.im_loss(z) + beta * pseudo

    inputs = distill.InputsOnly(cal, where="teacher_study")
    spec = TrainSpec(epochs=epochs, lr=lr)
    fine_tune(teacher, params, inputs, spec, where="teacher_study", loss_fn=loss, progress=False)
    return teacher.requires_grad_(False)


def build(name: str, model, cal):
    """The teacher of recipe ``name`` (the module docstring)."""
    if name == "model":
        return model
    if name == "im":
        return distill.im_adapted_teacher(model, cal, progress=False)
    if name in ("labels-bn", "labels-bn-2"):
        spec = fxsnn.ConvertConfig().teacher_spec("labels")
        spec = spec.replace(epochs=2) if name == "labels-bn-2" else spec
        return teacher_for(model, cal, "labels", spec=spec, progress=False)
    if name == "labels-weights":
        config = Stage1Config(train_weights=True, train=fxsnn.ConvertConfig().teacher_spec("labels"))
        return fxsnn.recalibrate_bn(model, cal, config, progress=False)
    if name == "labels-stage1":
        return fxsnn.recalibrate_bn(model, cal, progress=False)
    if name.startswith("im-all-"):
        return information_maximised(model, cal, lr=float(name[len("im-all-") :]), epochs=1, every_parameter=True)
    beta, epochs = PSEUDO_LABEL[name]
    return information_maximised(model, cal, lr=1e-3, epochs=epochs, every_parameter=False, beta=beta)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="+", default=RECIPES, choices=RECIPES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads (1 on a loaded machine)")
    args = p.parse_args(argv)
    setup = held_out_setup(args.threads)
    if setup is None:
        return 0
    model, cal, val = setup
    rows = []
    for name in args.recipes:
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        top1 = 100 * fxsnn.evaluate(build(name, model, cal), val, progress=False).top1
        rows.append([name, f"{top1:.2f}", f"{time.perf_counter() - t0:.0f}"])
        print(f"{name}: {top1:.2f} % ({rows[-1][2]} s)", flush=True)
    print()
    print(tabulate(rows, headers=["teacher", "validation top-1 %", "seconds"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
