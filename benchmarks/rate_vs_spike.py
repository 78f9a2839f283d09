"""Measure how often rate mode and spike mode disagree on a spike count (DESIGN convention 7).

Both modes compute each neuron's count with the same expression; they differ
only in floating-point summation order (spike mode averages T per-step
currents, rate mode applies the layer to the averaged spikes), so a count can
differ only when a potential lands within rounding of a bin edge.

    python benchmarks/rate_vs_spike.py            # random small CNNs + ResNet-20 if ../shared/data exists
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tabulate import tabulate

import fxsnn
import fxsnn.testing as ft

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import RESNET20, cifar  # noqa: E402  (one loader for benchmarks and tests)


def compare(snn, x):
    return ft.check_rate_matches_spike(snn, x, max_mismatch_rate=1.0, atol=float("inf"))


def random_networks(n: int):
    rows = []
    mism = total = 0
    for seed in range(n):
        model = ft.random_cnn(seed, maxpool=True)
        x = ft.inputs_for(model, batch=8, seed=seed)
        T = 1 + seed % 8
        q = fxsnn.front_end(model, [x, 1.5 * x], levels=T, da=False, progress=False)
        snn = fxsnn.passes.lower_to_paraif(q, T=T, mode="rate")
        r = compare(snn, x)
        mism, total = mism + r.mismatched, total + r.total
    rows.append((f"{n} random small CNNs (T = 1..8)", mism, total, f"{100 * mism / total:.4f} %"))
    return rows


def resnet20(images: int):
    path = RESNET20
    if not path.exists():
        return [("ResNet-20 / CIFAR-10", "skipped: ../shared/data absent", "", "")]
    x, _ = cifar("test", images, seed=0)
    xc, _ = cifar("train_10k", 1000, seed=1)
    model = fxsnn.models.cifar_resnet(20, weights=path).eval()
    calib = [xc[i : i + 200] for i in range(0, len(xc), 200)]
    rows = []
    for T in (2, 4, 8):
        q = fxsnn.front_end(model, calib, levels=T, percentile=99.9, progress=False)
        snn = fxsnn.passes.lower_to_paraif(q, T=T, mode="rate")
        mism = total = 0
        diff = 0.0
        for i in range(0, images, 100):
            r = compare(snn, x[i : i + 100])
            mism, total, diff = mism + r.mismatched, total + r.total, max(diff, r.max_abs_diff)
        rows.append(
            (
                f"ResNet-20, {images} CIFAR-10 test images, T = {T} (max |Δlogit| {diff:.2e})",
                mism,
                total,
                f"{100 * mism / total:.4f} %",
            )
        )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--networks", type=int, default=40)
    p.add_argument("--images", type=int, default=500)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    rows = random_networks(args.networks) + resnet20(args.images)
    print(tabulate(rows, headers=("network", "differing counts", "counts", "rate"), tablefmt="github"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
