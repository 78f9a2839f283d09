"""Why Stage 2 does (not) help, and which settings make it: a study on held-out slices of train_10k, never the test set.

Splits ``../shared/data/cifar10/train_10k.npz`` as ``validate_defaults.py`` does (a fixed permutation; 8,000
calibration images, 2,000 validation images). Per T: the front end and Stage 1 (``--stage1`` overrides of
:class:`fxsnn.calibration.Stage1Config`) run once on the calibration images; the lowered network is the step-0
state. Then Stage 2 (:func:`fxsnn.tune_delta_b`) runs once per ``--variant`` (overrides of
:class:`fxsnn.calibration.Stage2Config`) from that same state. Printed per variant: the training loss (mean of the
first and of the last 10 % of the steps; and over all calibration images in a fixed order, at step 0 and
after Stage 2), Stage 2's own held-out loss (step 0 → best, and the step kept), and the
validation images' top-1 and cross-entropy (labels) and KL to the ANN, against step 0's.

    python benchmarks/stage2_study.py --T 2 4 8
    python benchmarks/stage2_study.py --T 4 --variant "lr=0.03" --variant "lr=0.003 surrogate=ste"
    python benchmarks/stage2_study.py --T 4 --stage1 "objective=distill" --variant "objective=distill"

A variant is a space-separated list of ``name=value`` overrides (Python literals; ``lr`` is ``train.lr``);
``""`` is the defaults. Exits cleanly (status 0, with a message) when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate
from torch.utils.data import DataLoader

import fxsnn
from fxsnn.calibration import Stage1Config, Stage2Config
from fxsnn.calibration.distill import kl_loss
from fxsnn.config import auto_percentile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shared_data  # noqa: E402
from shared_data import held_out_setup  # noqa: E402 - one loader for benchmarks and tests

#: The study's default Stage 2 variants: the defaults (the STE at 3e-3), other rates, the triangle surrogate (the
#: defaults before this study: 3e-2), distillation.
VARIANTS = (
    "",
    "lr=0.001",
    "lr=0.0003",
    "surrogate=triangle lr=0.03",
    "surrogate=triangle lr=0.001",
    "objective=distill",
)


def parse_overrides(text: str, kind: type) -> dict:
    """``"lr=0.01 surrogate=ste"`` → ``{"lr": 0.01, "surrogate": "ste"}``, checked against ``kind`` (a config)."""
    return shared_data.parse_overrides(text, kind, where="stage2_study")


@torch.no_grad()
def scores(net: torch.nn.Module, val: list, teacher_logits: list) -> tuple[float, float, float]:
    """Validation top-1 %, cross-entropy and KL to the ANN of ``net`` (rate mode)."""
    net = fxsnn.set_mode(net, "rate")
    kl, hits, ce, n = kl_loss(1.0), 0, 0.0, 0
    kls = 0.0
    for (x, y), t in zip(val, teacher_logits):
        z = net(x)
        hits += int((z.argmax(1) == y).sum())
        ce += float(torch.nn.functional.cross_entropy(z, y, reduction="sum"))
        kls += float(kl(z, t)) * len(y)
        n += len(y)
    return 100 * hits / n, ce / n, kls / n


@torch.no_grad()
def train_loss(net: torch.nn.Module, cal: DataLoader, teacher, objective: str) -> float:
    """The stage's own objective over all calibration images in a fixed order (rate mode): cross-entropy, or
    the KL to the ANN for ``objective="distill"`` — the training loss without the batch-to-batch noise of the
    per-step losses."""
    net = fxsnn.set_mode(net, "rate")
    kl, total, n = kl_loss(1.0), 0.0, 0
    for x, y in DataLoader(cal.dataset, batch_size=500):
        z = net(x)
        loss = kl(z, teacher(x)) if objective == "distill" else torch.nn.functional.cross_entropy(z, y)
        total += float(loss) * len(y)
        n += len(y)
    return total / n


def start_state(model, cal, T: int, stage1: dict) -> tuple[torch.fx.GraphModule, float]:
    """Front end + Stage 1 on the calibration images, lowered: Stage 2's step 0; and its seconds."""
    t0 = time.perf_counter()
    torch.manual_seed(0)
    da = fxsnn.front_end(
        model,
        cal,
        levels=T,
        percentile=auto_percentile(T),
        calibration_batches=fxsnn.ConvertConfig().calibration_batches,
        progress=False,
    )
    da = fxsnn.recalibrate_bn(da, cal, Stage1Config().replace(**stage1), progress=False, teacher=model)
    return fxsnn.passes.lower_to_paraif(da, T=T, mode="rate"), time.perf_counter() - t0


def study_row(snn, model, cal, val, teacher_logits, T: int, text: str, base: tuple) -> list:
    """One Stage 2 run from ``snn``: the row of the table."""
    torch.manual_seed(0)
    t0 = time.perf_counter()
    config = Stage2Config().replace(**parse_overrides(text, Stage2Config))
    out = fxsnn.tune_delta_b(snn, cal, config, teacher=model, progress=False)
    secs = time.perf_counter() - t0
    rep = out.meta["fxsnn.stage2"]
    full0, full1 = (train_loss(net, cal, model, config.objective) for net in (snn, out))
    k = max(1, len(rep.losses) // 10)
    first, last = sum(rep.losses[:k]) / k, sum(rep.losses[-k:]) / k
    hold0 = rep.holdout[0][1] if rep.holdout else float("nan")
    best = min(h for _, h in rep.holdout) if rep.holdout else float("nan")
    top1, ce, kl = scores(out, val, teacher_logits)
    return [
        T,
        text or "(defaults)",
        f"{first:.4f} → {last:.4f}",
        f"{full0:.4f} → {full1:.4f}",
        f"{hold0:.4f} → {best:.4f} (step {rep.best_step}/{rep.steps})",
        f"{top1:.2f} ({top1 - base[0]:+.2f})",
        f"{ce:.4f} ({ce - base[1]:+.4f})",
        f"{kl:.4f} ({kl - base[2]:+.4f})",
        f"{secs:.0f}",
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--T", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--stage1", default="", help='Stage1Config overrides, e.g. "objective=distill"')
    p.add_argument("--variant", action="append", default=None, help="Stage2Config overrides (repeatable)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    variants = args.variant if args.variant is not None else list(VARIANTS)
    stage1 = parse_overrides(args.stage1, Stage1Config)
    for v in variants:
        parse_overrides(v, Stage2Config)
    setup = held_out_setup(args.threads)
    if setup is None:
        return 0
    model, cal, val = setup
    with torch.no_grad():
        teacher_logits = [model(x) for x, _ in val]
    rows = []
    for T in args.T:
        snn, secs = start_state(model, cal, T, stage1)
        base = scores(snn, val, teacher_logits)
        print(
            f"T={T} step 0 (front end + Stage 1 {args.stage1 or 'defaults'}, {secs:.0f} s): top-1 {base[0]:.2f} %, "
            f"CE {base[1]:.4f}, KL {base[2]:.4f}",
            flush=True,
        )
        rows.append([T, "step 0 (no Stage 2)", "", "", "", f"{base[0]:.2f}", f"{base[1]:.4f}", f"{base[2]:.4f}", ""])
        for text in variants:
            rows.append(study_row(snn, model, cal, val, teacher_logits, T, text, base))
            print(" | ".join(map(str, rows[-1])), flush=True)
    print()
    headers = [
        "T",
        "Stage 2 variant",
        "train loss (steps)",
        "train loss (all)",
        "Stage 2 held-out loss",
        "val top-1 %",
        "val CE",
        "val KL",
        "s",
    ]
    print(tabulate(rows, headers=headers, tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
