"""Where spike mode's time goes (issue 13): a profile per T and per batch size, and the ratios to the ANN.

    python benchmarks/spike_profile.py --write          # the grid below into docs/performance.md (2 threads)
    python benchmarks/spike_profile.py --serial          # also fxsnn's serial simulation, at the largest batch
    python benchmarks/spike_profile.py --quick           # smoke form: random weights, tiny sizes, one round

For ResNet-20 (the shared weights and CIFAR-10 test images; random ones when ../shared/data is absent) and each
T and batch size: the ANN and the lowered network in spike mode timed in interleaved rounds
(:func:`speed.rounds`; a ratio is the median over rounds of ``time(spike) / time(ANN, same round)``), then one
more spike-mode forward split by layer kind (module hooks: :func:`speed.layer_profile`) and, at the largest
batch, one per op (torch.profiler self CPU time: :func:`speed.op_profile`). One network per T (the front end
calibrated on one batch of 256 train_10k images, levels = T) serves every batch size. ``--write`` puts the tables
between the markers ``<!-- spike-profile:start -->`` and ``<!-- spike-profile:end -->`` of docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

import fxsnn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import shared_data  # noqa: E402
from doc_sections import replace_section  # noqa: E402
from speed import layer_profile, md_table, op_profile, rounds  # noqa: E402 - one timing loop, one profiler

DOC = ROOT / "docs" / "performance.md"
START, END = "<!-- spike-profile:start -->", "<!-- spike-profile:end -->"
#: layer kinds of the grid's share columns; every other module kind is summed into "other modules"
KINDS = ("Conv2d", "BatchNorm2d", "ParallelIF")
OUTSIDE = "(outside modules: adds, reshapes)"


def setup(batch: int, quick: bool):
    """``(description, ann, the largest timing batch, calibration batches)``."""
    if shared_data.RESNET20.exists() and not quick:
        ann = fxsnn.models.cifar_resnet(20, weights=str(shared_data.RESNET20)).eval()
        x = shared_data.cifar("test", batch)[0].contiguous()
        calib = [shared_data.cifar("train_10k", 256, seed=1)[0].contiguous()]
        return "CIFAR ResNet-20, published weights, CIFAR-10 test images (calibration: train_10k)", ann, x, calib
    g = torch.Generator().manual_seed(0)  # random weights and data: the same shapes, the same work
    ann = fxsnn.models.cifar_resnet(20).eval()
    x, calib = torch.randn(batch, 3, 32, 32, generator=g), [torch.randn(64, 3, 32, 32, generator=g)]
    return "CIFAR ResNet-20, random init and inputs", ann, x, calib


def shares(layers) -> dict[str, float]:
    """``{column: % of the forward}`` from :func:`speed.layer_profile` rows."""
    pct = {k: p for k, _n, _t, p in layers}
    out = {k: pct.get(k, 0.0) for k in KINDS}
    out["outside"] = pct.get(OUTSIDE, 0.0)
    out["other"] = 100.0 - sum(out.values())
    return out


def grid_point(ann, snn, serial, x, T: int, repeats: int) -> dict:
    """Times and shares at one (T, batch): ANN and spike (and ``serial`` when given) in interleaved rounds."""
    fns = {"ann": lambda: ann(x), "spike": lambda: snn(x)}
    if serial is not None:
        fns["serial"] = lambda: serial(x)
    t = rounds(fns, repeats, warm=("ann", "spike"))
    row = {"T": T, "batch": x.shape[0], **{k: statistics.median(v) for k, v in t.items()}}
    row["ratio"] = statistics.median(s / a for s, a in zip(t["spike"], t["ann"]))
    if serial is not None:
        row["vs_serial"] = statistics.median(s / r for s, r in zip(t["spike"], t["serial"]))
    row.update(shares(layer_profile(snn, x)))
    return row


def run(args, log) -> tuple[str, list[dict], dict[int, list]]:
    batches = sorted(int(b) for b in args.batches.split(","))
    what, ann, x, calib = setup(batches[-1], args.quick)
    args.calib_images = sum(len(c) for c in calib)
    rows, ops = [], {}
    for T in [int(t) for t in args.T.split(",")]:
        q = fxsnn.front_end(ann, calib, levels=T, progress=False)
        snn = fxsnn.passes.lower_to_paraif(q, T=T).eval()
        for b in batches:
            serial = fxsnn.passes.to_serial(snn).eval() if args.serial and b == batches[-1] else None
            rows.append(grid_point(ann, snn, serial, x[:b], T, args.repeats))
            r = rows[-1]
            log(f"T={T} batch={b}: ANN {r['ann'] * 1e3:.0f} ms, spike {r['spike'] * 1e3:.0f} ms ({r['ratio']:.2f}x)")
        ops[T] = op_profile(snn, x, rows=10**6)[:-1]  # every op, the largest first
    return what, rows, ops


def render(what: str, rows: list[dict], ops: dict[int, list], args, elapsed: float) -> str:
    flags = "".join(f" {a}" for a in args.given)
    head = ["T", "batch", "ANN ms", "spike ms (× ANN)", "target ≤ 1.2·T×", *[f"{k} %" for k in KINDS]]
    head += ["outside modules % (adds, reshapes)", "other modules %"]
    body = []
    for r in rows:
        spike = f"{r['spike'] * 1e3:,.0f} ({r['ratio']:.2f}×)"
        cells = [r["T"], r["batch"], f"{r['ann'] * 1e3:,.0f}", spike, f"{1.2 * r['T']:.1f}"]
        body.append(cells + [f"{r[k]:.1f}" for k in (*KINDS, "outside", "other")])
    names = list(dict.fromkeys(k for table in ops.values() for k, _t, _p in table[: args.op_rows]))
    share = {T: {n: p for n, _t, p in table} for T, table in ops.items()}
    op_rows = [[k] + [f"{share[T][k]:.1f}" if k in share[T] else "–" for T in ops] for k in names]
    op_rows.append(["(all other ops)"] + [f"{100 - sum(share[T].get(k, 0.0) for k in names):.1f}" for T in ops])
    serial = [r for r in rows if "serial" in r]
    parts = [
        START,
        "## Spike mode per T and batch size (generated)",
        "",
        f"Written by `python benchmarks/spike_profile.py{flags}` ({datetime.date.today()}, {elapsed / 60:.1f} min, "
        f"{args.threads} torch threads, load average {args.load_before} before and "
        "{:.2f} after); {}. ANN and spike mode in interleaved rounds ({} per point) after one warm-up call each "
        "(the serial simulation, where timed, without one: its steps run shapes already warmed up; medians, the "
        "ratio the median of the per-round ratios), then one more spike-mode forward split by "
        "layer kind with module hooks (wall time). One network per T (front end on {} calibration images, "
        "levels = T) for every batch size.".format(os.getloadavg()[0], what, args.repeats, args.calib_images),
        "",
        md_table(head, body),
        "",
        f"Per op at batch {rows[-1]['batch']}: % of one spike-mode forward's self CPU time (torch.profiler; the "
        f"{args.op_rows} largest ops of each T; – : the op did not run at that T):",
        "",
        md_table(["op", *[f"T = {T}" for T in ops]], op_rows),
    ]
    if serial:
        cells = [[r["T"], r["batch"], f"{r['serial'] * 1e3:,.0f}", f"{r['vs_serial']:.2f}"] for r in serial]
        parts += ["", md_table(["T", "batch", "serial (fxsnn) ms", "spike ÷ serial"], cells)]
    return "\n".join(parts + ["", END, ""])


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", default="2,4,8,16", help="comma-separated time steps (default 2,4,8,16)")
    ap.add_argument("--batches", default="32,64,128,256", help="comma-separated batch sizes (default 32,64,128,256)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds per point (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2, as speed.py)")
    ap.add_argument("--op-rows", type=int, default=8, help="the largest ops of each T to list (default 8)")
    ap.add_argument("--serial", action="store_true", help="also time fxsnn's serial simulation at the largest batch")
    ap.add_argument("--quick", action="store_true", help="smoke form: random weights, batches 2,4, T 2, one round")
    ap.add_argument("--write", action="store_true", help=f"rewrite the generated section of {DOC.relative_to(ROOT)}")
    ap.add_argument("--out", default=str(DOC), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.given = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--write"]
    if args.quick:
        args.T, args.batches, args.repeats = "2", "2,4", 1
    return args


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*no channel ever activated.*")
    args.load_before = f"{os.getloadavg()[0]:.2f}"
    t0 = time.perf_counter()
    what, rows, ops = run(args, lambda m: print(m, flush=True))
    text = render(what, rows, ops, args, time.perf_counter() - t0)
    print(text)
    if args.write:
        replace_section(Path(args.out), text, START, END, append=True)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
