"""Micro-benchmark of the neuron alone: ParallelIF (rate and spike mode, forward and backward) against a ReLU.

    python benchmarks/neuron_micro.py                    # ResNet-20's widest activation, [256, 16, 32, 32]
    python benchmarks/neuron_micro.py --shape 8,4,6,6 --T 2 --min-time 0.01   # smoke form

Every time is compared with a plain ReLU on the same tensor (``torch.utils.benchmark``,
median of blocked runs), so a regression in the neuron shows up as a ratio that
does not depend on how fast or busy the machine is. Spike mode works on the
``[T·B, ...]`` train, so it is compared with a ReLU on that train as well.
Forward rows run under ``torch.inference_mode()``; backward rows time forward +
backward with ``x`` and Δb requiring gradients (the Stage 2 setting).
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch.utils import benchmark

from fxsnn.nn import ParallelIF


def _neuron(C: int, T: int, mode: str) -> ParallelIF:
    g = torch.Generator().manual_seed(0)
    theta = torch.rand(C, generator=g) + 0.5
    psi_da = 0.05 * torch.randn(C, generator=g)
    return ParallelIF(theta, T=T, theta_post=theta * 1.1, psi_da=psi_da, mode=mode)


def _median(stmt, min_time: float, threads: int, **glob) -> float:
    timer = benchmark.Timer(stmt=stmt, globals=glob, num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_time).median


def _fwd_bwd(fn, x):
    x = x.detach().requires_grad_()
    fn(x).sum().backward()


def run(shape=(256, 16, 32, 32), Ts=(4, 8), threads: int = 2, min_time: float = 0.5) -> list[dict]:
    """Rows ``{case, T, seconds, vs_relu, vs_relu_TB}`` (ratios to a ReLU on ``[B, ...]`` and on ``[T·B, ...]``)."""
    torch.set_num_threads(threads)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    C = shape[1]
    rows = []

    def inf(stmt, **g):
        return _median(f"with torch.inference_mode(): {stmt}", min_time, threads, torch=torch, **g)

    relu_f = inf("torch.relu(x)", x=x)
    relu_b = _median("fb(torch.relu, x)", min_time, threads, fb=_fwd_bwd, torch=torch, x=x)
    rows.append({"case": "ReLU forward", "T": "", "seconds": relu_f, "vs_relu": 1.0, "vs_relu_TB": None})
    rows.append({"case": "ReLU forward + backward", "T": "", "seconds": relu_b, "vs_relu": 1.0, "vs_relu_TB": None})
    for T in Ts:
        xT = x.repeat((T,) + (1,) * (x.dim() - 1))
        relu_fT = inf("torch.relu(xT)", xT=xT)
        relu_bT = _median("fb(torch.relu, xT)", min_time, threads, fb=_fwd_bwd, torch=torch, xT=xT)
        rate, spike = _neuron(C, T, "rate"), _neuron(C, T, "spike")
        cases = [
            ("ParallelIF rate forward", inf("n(x)", n=rate, x=x), relu_f, None),
            ("ParallelIF spike forward", inf("n(xT)", n=spike, xT=xT), relu_f, relu_fT),
            (
                "ParallelIF rate forward + backward",
                _median("fb(n, x)", min_time, threads, fb=_fwd_bwd, n=rate, x=x),
                relu_b,
                None,
            ),
            (
                "ParallelIF spike forward + backward",
                _median("fb(n, xT)", min_time, threads, fb=_fwd_bwd, n=spike, xT=xT),
                relu_b,
                relu_bT,
            ),
        ]
        for name, t, ref, refT in cases:
            rows.append(
                {
                    "case": name,
                    "T": T,
                    "seconds": t,
                    "vs_relu": t / ref,
                    "vs_relu_TB": None if refT is None else t / refT,
                }
            )
    return rows


def table(rows) -> str:
    out = ["| case | T | ms | × ReLU on [B, ...] | × ReLU on [T·B, ...] |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        tb = "" if r["vs_relu_TB"] is None else f"{r['vs_relu_TB']:.2f}"
        out.append(f"| {r['case']} | {r['T']} | {r['seconds'] * 1e3:.2f} | {r['vs_relu']:.2f} | {tb} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--shape", default="256,16,32,32", help="B,C,H,W of the input (default: ResNet-20 layer 1, batch 256)"
    )
    ap.add_argument("--T", default="4,8", help="comma-separated time steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds of blocked runs per measurement")
    args = ap.parse_args(argv)
    rows = run(
        tuple(int(s) for s in args.shape.split(",")), [int(t) for t in args.T.split(",")], args.threads, args.min_time
    )
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
