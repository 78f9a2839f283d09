"""``fxsnn.convert`` on 1 process and on 2 processes (gloo, CPU) fed the same global batches: ResNet-20, CIFAR-10.

Converts the shared ResNet-20 (method ``full``, T = 4, fxsnn's recipe unless ``--set`` overrides it) on ``--images``
training images in global batches of ``--batch``: once in this process, once under
``torchrun --nproc_per_node 2`` where rank ``r`` gets rows ``[r·B/2, (r+1)·B/2)`` of every global batch. Each
process uses one thread. Reports θ after calibration (bit-identical or not), the largest difference of the
BatchNorm statistics (Eq. 10 on the FS-PC network, where the two runs' networks are identical, and in the final
networks), of every trained tensor of the final network, the top-1 difference on ``--test-images`` test images (rate
mode), the wall time of ``convert`` in each run, and the bytes every rank all-reduced (per call site and buffer
size; each fine-tuning step is exactly one all-reduce).

    python benchmarks/distributed.py                      # 512 images, global batches of 64
    python benchmarks/distributed.py --images 256 --set stage1.epochs=1 --json out.json

Exits 0 with a message when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import fxsnn
from fxsnn.calibration import distributed, reestimate_bn_stats
from fxsnn.config import ConvertConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from shared_data import RESNET20, cifar  # noqa: E402

BN = ("running_mean", "running_var")


def _batches(n: int, batch: int, rank: int, world: int) -> list:
    """Rank ``rank``'s rows of each global batch of the first ``n`` images of train_10k (seeded permutation)."""
    x, y = cifar("train_10k", n, seed=0)
    part = batch // world
    rows = [slice(i + rank * part, i + (rank + 1) * part) for i in range(0, n - batch + 1, batch)]
    return [(x[r], y[r]) for r in rows]


def _counting():
    """Count the bytes of every collective (``(where, bytes per call) → calls``) by wrapping the one entry point."""
    counts: collections.Counter = collections.Counter()
    inner = distributed._collective

    def counted(fn, t, *args, where, **kwargs):
        counts[(where, fn.__name__, t.numel() * t.element_size())] += 1
        return inner(fn, t, *args, where=where, **kwargs)

    distributed._collective = counted
    return counts


def work(args: argparse.Namespace, out: Path) -> None:
    """One run (this process alone, or one torchrun rank): θ, BN statistics, the converted network, timings."""
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        torch.distributed.init_process_group("gloo")
    counts = _counting()
    data = _batches(args.images, args.batch, distributed.rank(), world)
    model = fxsnn.models.cifar_resnet(20, weights=RESNET20).eval()
    cfg = ConvertConfig().override(*args.set)
    fs = fxsnn.front_end(model, data, levels=4, percentile=None, da=False, progress=False)
    front = fxsnn.front_end(model, data, levels=4, percentile=99.0, progress=False)
    bn = reestimate_bn_stats(fs, data, progress=False)
    t0 = time.perf_counter()
    snn = fxsnn.convert(model, data, T=4, method="full", config=cfg, progress=False)
    seconds = time.perf_counter() - t0
    result = {
        "theta_max": {k: v for k, v in fs.state_dict().items() if k.endswith("theta")},
        "theta_p99": {k: v for k, v in front.state_dict().items() if k.endswith("theta")},
        "bn_fspc": {k: v for k, v in bn.state_dict().items() if k.endswith(BN)},
        "snn": snn.state_dict(),
        "seconds": seconds,
        "steps": {"stage2": snn.meta["fxsnn.stage2"].steps, "batches": len(data)},
        "comm": [[w, fn, b, c] for (w, fn, b), c in sorted(counts.items())],
    }
    if distributed.rank() == 0:
        torch.save(result, out)
    if world > 1:
        torch.distributed.destroy_process_group()


def _max_diff(a: dict, b: dict, keys=None) -> float:
    keys = [k for k in a if a[k].is_floating_point() and (keys is None or k.endswith(keys))]
    return max(((a[k].double() - b[k].double()).abs().max().item() for k in keys), default=0.0)


def _accuracy(state: dict, n_test: int) -> float:
    """Top-1 (rate mode) on ``n_test`` test images of a network with the single run's graph and ``state``."""
    xt, yt = cifar("test", n_test, seed=0)
    model = fxsnn.models.cifar_resnet(20, weights=RESNET20).eval()
    snn = fxsnn.passes.lower_to_paraif(fxsnn.front_end(model, [(xt[:8], yt[:8])], levels=4, progress=False), T=4)
    snn.load_state_dict(state)
    fxsnn.set_mode(snn, "rate")
    return fxsnn.evaluate(snn, [(xt[i : i + 100], yt[i : i + 100]) for i in range(0, n_test, 100)], progress=False).top1


def _launch(args: argparse.Namespace, tmp: Path) -> tuple[dict, dict, float]:
    """The single run (a subprocess, so both start alike) and the 2-rank torchrun; their results and its wall time."""
    base = [__file__, "--worker", "--images", str(args.images), "--batch", str(args.batch)]
    base += [a for s in args.set for a in ("--set", s)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    subprocess.run([sys.executable, *base, "--out", str(tmp / "one.pt")], env=env, check=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29577"]
    t0 = time.perf_counter()
    subprocess.run([*torchrun, *base, "--out", str(tmp / "two.pt")], env=env, check=True)
    wall = time.perf_counter() - t0
    load = lambda name: torch.load(tmp / name, weights_only=True)  # noqa: E731
    return load("one.pt"), load("two.pt"), wall


def report(one: dict, two: dict, args: argparse.Namespace, wall: float) -> dict:
    """The comparison as a dict (printed by :func:`main`)."""
    same = all(torch.equal(one[p][k], two[p][k]) for p in ("theta_max", "theta_p99") for k in one[p])
    trained = [k for k in one["snn"] if not k.endswith(BN)]
    acc1, acc2 = _accuracy(one["snn"], args.test_images), _accuracy(two["snn"], args.test_images)
    per_step = [c for c in two["comm"] if c[1] == "all_reduce" and c[0].startswith("fxsnn.tune_delta_b")]
    return {
        "images": args.images,
        "global_batch": args.batch,
        "theta_bit_identical": same,
        "bn_max_diff_fspc": _max_diff(one["bn_fspc"], two["bn_fspc"]),
        "bn_max_diff_final": _max_diff(one["snn"], two["snn"], BN),
        "trained_max_diff": _max_diff({k: one["snn"][k] for k in trained}, two["snn"]),
        "top1_one": acc1,
        "top1_two": acc2,
        "convert_seconds_one": one["seconds"],
        "convert_seconds_two": two["seconds"],
        "torchrun_wall_seconds": wall,
        "steps": two["steps"],
        "comm": two["comm"],
        "stage2_bytes_per_step": max((c[2] for c in per_step), default=0),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=512, help="training images (default 512)")
    p.add_argument("--batch", type=int, default=64, help="global batch size, even (default 64)")
    p.add_argument("--test-images", type=int, default=500, help="test images for the accuracy (default 500)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not RESNET20.exists():
        print(f"skipped: {RESNET20} is absent")
        return 0
    if args.worker:
        work(args, Path(args.out))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        one, two, wall = _launch(args, Path(tmp))
    rep = report(one, two, args, wall)
    for k, v in rep.items():
        if k != "comm":
            print(f"{k}: {v}")
    print("bytes all-reduced per rank (call site, collective, bytes per call, calls):")
    for where, fn, size, calls in rep["comm"]:
        print(f"  {where:45s} {fn:10s} {size:10d} B x {calls}")
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
