"""Choose convert's defaults by validation: a held-out slice of the calibration data, never the test set.

Splits ``../shared/data/cifar10/train_10k.npz`` once, through a fixed random permutation (the file is
sorted by class), into 8,000 calibration images and 2,000 validation images; converts the shared ResNet-20
with each variant of :class:`fxsnn.ConvertConfig` and prints its top-1 on the validation images.

    python benchmarks/validate_defaults.py                                   # stage1.train_theta off / on, T = 2 4 8
    python benchmarks/validate_defaults.py --T 4 --method full --variant stage2.lr=0.01 --variant stage2.lr=0.03

A variant is a space-separated list of ``name=value`` overrides of ``ConvertConfig`` (Python literals);
the empty variant ``""`` is the defaults. Exits cleanly (status 0, with a message) when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tabulate import tabulate

import fxsnn
from fxsnn.config import METHODS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import held_out_setup, parse_overrides  # noqa: E402 - one loader for benchmarks and tests


def parse_variant(text: str) -> dict:
    """``"stage1.train_theta=True stage2.lr=0.01"`` → ``{"stage1.train_theta": True, "stage2.lr": 0.01}``.

    Keys are :class:`fxsnn.ConvertConfig`'s dotted keys (as for ``fxsnn convert --set``).
    """
    return parse_overrides(text, fxsnn.ConvertConfig, where="validate_defaults")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--T", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--method", default="spatial", choices=METHODS)
    p.add_argument(
        "--variant",
        action="append",
        default=None,
        help='ConvertConfig overrides, e.g. "stage1.train_theta=False" (repeatable; "" = the defaults)',
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads (1 on a loaded machine)")
    args = p.parse_args(argv)
    variants = args.variant if args.variant is not None else ["stage1.train_theta=False", "stage1.train_theta=True"]
    overrides = [parse_variant(v) for v in variants]
    setup = held_out_setup(args.threads)
    if setup is None:
        return 0
    model, cal, val = setup
    rows = []
    for T in args.T:
        for text, kw in zip(variants, overrides):
            t0 = time.perf_counter()
            config = fxsnn.ConvertConfig().replace(**kw)
            snn = fxsnn.convert(model, cal, T=T, method=args.method, config=config, seed=args.seed, progress=False)
            secs = time.perf_counter() - t0
            acc = fxsnn.evaluate(fxsnn.set_mode(snn, "rate"), val, progress=False).top1
            rows.append([T, args.method, text or "(defaults)", f"{100 * acc:.2f}", f"{secs:.0f}"])
            print(f"T={T} {args.method} {text or '(defaults)'}: {100 * acc:.2f} % ({secs:.0f} s)", flush=True)
    print()
    print(tabulate(rows, headers=["T", "method", "variant", "validation top-1 %", "seconds"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
