"""Where spike mode's time goes (issue 13): per-op profile and ANN / spike / serial ratios in one run.

    python benchmarks/spike_profile.py                    # ResNet-20, batch 256, T = 2,4,8,16, 1 thread
    python benchmarks/spike_profile.py --T 4,16 --profile # plus a torch.profiler table per T
    python benchmarks/spike_profile.py --md out.md        # also write the tables as Markdown

Times one batch of the ANN, the lowered network in spike mode, and ``fxsnn.passes.to_serial`` in
interleaved rounds (1 thread: the ratios are what matters; other processes on the machine add noise
to the absolute times). A ratio is the median over rounds of ``time(variant) / time(ANN, same round)``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

import torch

import fxsnn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import shared_data  # noqa: E402
from speed import rounds  # noqa: E402 - one interleaved-timing loop for both speed scripts

VARIANTS = ("ann", "spike", "serial")


def setup(batch: int):
    if shared_data.RESNET20.exists():
        ann = fxsnn.models.cifar_resnet(20, weights=str(shared_data.RESNET20)).eval()
        x = shared_data.cifar("test", batch)[0].contiguous()
        calib = [shared_data.cifar("train_10k", 2 * batch, seed=1)[0].contiguous()]
    else:  # random weights and data: the same shapes, the same work
        g = torch.Generator().manual_seed(0)
        ann = fxsnn.models.cifar_resnet(20).eval()
        x, calib = torch.randn(batch, 3, 32, 32, generator=g), [torch.randn(2 * batch, 3, 32, 32, generator=g)]
    return ann, x, calib


def profile_table(fn, rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def bench(ann, x, calib, T: int, repeats: int, prof: bool) -> str:
    """One Markdown row: ANN, spike and serial times and ratios at this T (and a profile table if ``prof``)."""
    snn = fxsnn.passes.lower_to_paraif(fxsnn.front_end(ann, calib, levels=T, progress=False), T=T).eval()
    serial = fxsnn.passes.to_serial(snn).eval()
    fns = {"ann": lambda: ann(x), "spike": lambda: snn(x), "serial": lambda: serial(x)}
    t = rounds(fns, repeats, warm=fns)  # every variant warmed up once
    med = {k: statistics.median(v) for k, v in t.items()}
    ratio = {k: statistics.median(a / b for a, b in zip(t[k], t["ann"])) for k in VARIANTS}
    vs = statistics.median(a / b for a, b in zip(t["spike"], t["serial"]))
    line = (
        f"| {T} | {med['ann'] * 1e3:.0f} | {med['spike'] * 1e3:.0f} ({ratio['spike']:.2f}×) | "
        f"{med['serial'] * 1e3:.0f} ({ratio['serial']:.2f}×) | {vs:.2f} | {1.2 * T:.1f} |"
    )
    print(line, flush=True)
    if prof:
        print(profile_table(lambda: snn(x), 25), flush=True)
    return line


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", default="2,4,8,16")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of one spike forward")
    ap.add_argument("--md", default=None, help="write the ratio table as Markdown to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    ann, x, calib = setup(args.batch)
    lines = [
        "| T | ANN ms | spike ms (× ANN) | serial ms (× ANN) | spike ÷ serial | target 1.2·T |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for T in [int(t) for t in args.T.split(",")]:
        lines.append(bench(ann, x, calib, T, args.repeats, args.profile))
    if args.md:
        Path(args.md).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
