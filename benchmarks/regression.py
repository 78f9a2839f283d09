"""Refactoring guard: convert the shared ResNet-20 and compare with a stored reference, tensor by tensor.

Converts ResNet-20 with ``fspc`` and ``full`` at T = 4 (seed 0; calibration on a fixed 1,000-image slice of
train_10k, batches of 100; outputs on a fixed 500-image slice of the test set) and compares every tensor of
each converted network's ``state_dict`` (θ_pre, θ_post = θ + φ_DA, ψ_DA, Δb of every site, the BatchNorm
statistics and affine terms) and its rate-mode and spike-mode outputs with ``benchmarks/reference/
regression_T4.pt`` (written by ``--write`` before the redesign of issue 8; rewritten when issue 12 changed the
defaults on purpose). Prints one line per tensor that is
not bit-identical (with its largest difference) and exits 1 if any is not.

    python benchmarks/regression.py            # compare (about 1 min on 2 cores)
    python benchmarks/regression.py --write    # (re)write the reference: only when a change is intended

The reference is a plain dict of tensors read with ``torch.load(weights_only=True)`` (no code runs).
Exits 0 with a message when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

import fxsnn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from shared_data import RESNET20, cifar  # noqa: E402

REFERENCE = ROOT / "benchmarks" / "reference" / "regression_T4.pt"
METHODS = ("fspc", "full")


def run() -> dict[str, torch.Tensor]:
    """Every tensor the comparison covers, keyed ``method/name``."""
    torch.set_num_threads(2)
    model = fxsnn.models.cifar_resnet(20, weights=RESNET20).eval()
    x, y = cifar("train_10k", 1000, seed=0)
    calib = DataLoader(TensorDataset(x, y), batch_size=100, shuffle=True)
    xt, _ = cifar("test", 500, seed=0)
    out: dict[str, torch.Tensor] = {}
    for method in METHODS:
        snn = fxsnn.convert(model, calib, T=4, method=method, seed=0, progress=False)
        for k, v in snn.state_dict().items():
            out[f"{method}/state/{k}"] = v.detach().clone()
        with torch.no_grad():
            for mode in ("rate", "spike"):
                fxsnn.set_mode(snn, mode)
                out[f"{method}/logits_{mode}"] = snn(xt).detach().clone()
    return out


def compare(new: dict, ref: dict) -> list[str]:
    problems = [f"missing in this run: {k}" for k in sorted(ref.keys() - new.keys())]
    problems += [f"not in the reference: {k}" for k in sorted(new.keys() - ref.keys())]
    for k in sorted(ref.keys() & new.keys()):
        a, b = new[k], ref[k]
        if a.shape != b.shape or a.dtype != b.dtype:
            problems.append(f"{k}: {tuple(a.shape)} {a.dtype} vs reference {tuple(b.shape)} {b.dtype}")
        elif not torch.equal(a, b):
            diff = (a.double() - b.double()).abs().max().item()
            problems.append(f"{k}: differs, max |diff| = {diff:.3g}")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="write the reference instead of comparing")
    args = p.parse_args(argv)
    if not RESNET20.exists():
        print(f"skipped: {RESNET20} is absent")
        return 0
    new = run()
    if args.write:
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        torch.save(new, REFERENCE)
        print(f"wrote {len(new)} tensors to {REFERENCE.relative_to(ROOT)}")
        return 0
    ref = torch.load(REFERENCE, map_location="cpu", weights_only=True)
    problems = compare(new, ref)
    for line in problems:
        print(line)
    print(f"{len(ref)} reference tensors: {len(problems)} not bit-identical")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
