"""Speed and memory of a converted network against its ANN (issue 4); writes docs/performance.md.

    python benchmarks/speed.py                          # the full run (about 30 min on 2 CPU threads)
    python benchmarks/speed.py --quick --out /tmp/p.md  # smoke form: tiny sizes, seconds (used by the tests)

For ResNet-20 (CIFAR, batch 256) and torchvision ResNet-18 (224x224, batch 32,
random init: dense CPU timing does not depend on the weights) and each T, it
times one batch of: the ANN, the converted network in rate mode, in spike mode,
the serial step-by-step IF reference (``fxsnn.passes.to_serial``) and, as the floor of
spike mode, the ANN on a T-times larger batch. All variants of one T are run in
interleaved rounds; a ratio is the median over rounds of
``time(variant) / time(ANN in the same round)``. Peak memory is the peak of the
bytes held through PyTorch's CPU allocator during one forward (torch.profiler
memory events), above what was held before it (weights and input excluded).
Then the wall time of each conversion stage for ResNet-20 at T = 4 on the 10k
calibration images (needs ../shared/data; skipped when absent).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

import fxsnn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import shared_data  # noqa: E402  (one loader for benchmarks and tests)
from shared_data import RESNET20  # noqa: E402

VARIANTS = ("ann", "rate", "rate_fused", "spike", "spike_mb", "serial", "ann_TB")
LOADS: list[float] = []  # 1-min load average sampled at the start of each model/T block
NOTES = "<!-- hand-written notes below this line are kept when benchmarks/speed.py rewrites the file -->"
DEFAULT_REPEATS = {"resnet20": 5, "resnet18": 3}  # ResNet-18 at T = 16: about 4 min per round on 2 threads
MEM_VARIANTS = ("ann", "rate", "spike", "spike_mb", "serial")
LABEL = {
    "ann": "ANN",
    "rate": "rate",
    "rate_fused": "rate, fused (opt-in)",
    "spike": "spike",
    "spike_mb": "spike, B/T per call",
    "serial": "serial IF",
    "ann_TB": "ANN on T·B",
}


# -- inputs and models ------------------------------------------------------------------
def cifar(name: str, n: int | None = None, seed: int = 0):
    """:func:`shared_data.cifar` in NCHW memory order, as a DataLoader gives it."""
    x, y = shared_data.cifar(name, n, seed)
    return x.contiguous(), y


def model_case(name: str, quick: bool):
    """``(description, ann, timing batch, calibration batches)``."""
    g = torch.Generator().manual_seed(0)
    if name == "resnet20":
        batch = 8 if quick else 256
        if RESNET20.exists():
            ann = fxsnn.models.cifar_resnet(20, weights=str(RESNET20))
            x, _ = cifar("test", batch)
            calib = [cifar("train_10k", 2 * batch, seed=1)[0]]
            what = "CIFAR ResNet-20, published weights, CIFAR-10 test images"
        else:
            ann = fxsnn.models.cifar_resnet(20)
            x = torch.randn(batch, 3, 32, 32, generator=g)
            calib = [torch.randn(2 * batch, 3, 32, 32, generator=g)]
            what = "CIFAR ResNet-20, random init, random inputs (../shared/data absent)"
        return f"{what}, batch {batch}", ann.eval(), x, calib
    if name == "resnet18":
        import torchvision

        batch, side = (2, 64) if quick else (32, 224)
        torch.manual_seed(0)
        ann = torchvision.models.resnet18(weights=None).eval()
        x = torch.randn(batch, 3, side, side, generator=g)
        calib = [torch.randn(batch, 3, side, side, generator=g) for _ in range(2)]
        return (
            f"torchvision ResNet-18, random init (no weights needed for timing), random {side}x{side} inputs, batch {batch}",
            ann,
            x,
            calib,
        )
    raise SystemExit(f"unknown model {name!r}; choose resnet20 or resnet18")


def da_qcfs(ann, calib, T: int):
    """The data-free front end: recorders (running max) → DA-QCFS (levels = T) → DA error calibration."""
    return fxsnn.front_end(ann, calib, levels=T, progress=False)


# -- measurement ------------------------------------------------------------------------
def rounds(fns: dict, repeats: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Interleaved timing. Each variant's first (warm-up) call runs under the memory profiler and gives its peak
    bytes; then ``repeats`` timed rounds, the order rotating per round."""
    times = {k: [] for k in fns}
    names = list(fns)
    peaks = {k: peak_bytes(f) for k, f in fns.items()}
    with torch.inference_mode():
        for r in range(repeats):
            for k in names[r % len(names) :] + names[: r % len(names)]:
                t0 = time.perf_counter()
                fns[k]()
                times[k].append(time.perf_counter() - t0)
    return times, peaks


def peak_bytes(fn) -> int:
    """Peak bytes held through PyTorch's CPU allocator while ``fn()`` runs, above the level before it."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    level = peak = 0
    for e in events:
        level += e.nbytes()
        peak = max(peak, level)
    return peak


def machine() -> dict[str, str]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "CPU": f"{cpu}, {os.cpu_count()} logical cores",
        "torch threads": str(torch.get_num_threads()),
        "software": f"Python {platform.python_version()}, torch {torch.__version__}, {platform.system()} {platform.release()}",
    }


def load() -> str:
    try:
        return "load average {:.2f} / {:.2f} / {:.2f} (1 / 5 / 15 min)".format(*os.getloadavg())
    except OSError:
        return "load average unavailable"


# -- the runs ---------------------------------------------------------------------------
def bench_model(name: str, Ts, repeats: int | None, quick: bool, log) -> tuple[str, list[dict]]:
    what, ann, x, calib = model_case(name, quick)
    repeats = repeats or DEFAULT_REPEATS[name]
    log(f"{name}: {what}")
    rows = []
    for T in Ts:
        q = da_qcfs(ann, calib, T)
        nets = {m: fxsnn.passes.lower_to_paraif(q, T=T, mode=m).eval() for m in ("rate", "spike")}
        nets["rate_fused"] = fxsnn.modes.set_fused(fxsnn.passes.lower_to_paraif(q, T=T, mode="rate").eval())
        with torch.inference_mode():
            t0 = time.perf_counter()
            nets["rate_fused"](x)  # compiles (or loads inductor's on-disk cache) for these shapes
            compile_s = time.perf_counter() - t0
        serial = fxsnn.passes.to_serial(nets["spike"]).eval()
        xTB = x.repeat((T,) + (1,) * (x.dim() - 1))
        chunks = x.split(max(1, x.shape[0] // T))  # spike mode on B/T images per call: [T·B/T, ...] tensors
        fns = {
            "ann": lambda: ann(x),
            "rate": lambda: nets["rate"](x),
            "rate_fused": lambda: nets["rate_fused"](x),
            "spike": lambda: nets["spike"](x),
            "spike_mb": lambda: [nets["spike"](c) for c in chunks],
            "serial": lambda: serial(x),
            "ann_TB": lambda: ann(xTB),
        }
        LOADS.append(os.getloadavg()[0])
        times, peaks = rounds(fns, repeats)
        row = {"T": T, "compile_s": compile_s}
        for k in VARIANTS:
            row[k] = statistics.median(times[k])
            row[k + "_ratio"] = statistics.median(t / a for t, a in zip(times[k], times["ann"]))
        for k in ("spike", "spike_mb"):
            row[k + "_vs_serial"] = statistics.median(s / r for s, r in zip(times[k], times["serial"]))
        for k in MEM_VARIANTS:
            row[k + "_mem"] = peaks[k]
        rows.append(row)
        log(
            f"  T={T}: "
            + ", ".join(f"{LABEL[k]} {row[k] * 1e3:.0f} ms ({row[k + '_ratio']:.2f}x)" for k in VARIANTS)
            + "; peak MiB "
            + ", ".join(f"{LABEL[k]} {row[k + '_mem'] / 2**20:.0f}" for k in MEM_VARIANTS)
        )
        del q, nets, serial, xTB, chunks, fns
    return what, rows


def bench_stages(quick: bool, log) -> tuple[str, list[tuple[str, float, str]]] | None:
    """Wall time of each conversion stage, ResNet-20 at T = 4 (fxsnn.convert's pieces, one epoch per stage)."""
    from torch.utils.data import DataLoader, TensorDataset

    try:
        from fxsnn.calibration import calibrate_, calibrate_da_
        from fxsnn.calibration.stage1 import recalibrate_bn
        from fxsnn.calibration.stage2 import tune_delta_b
    except ImportError as exc:  # the stages are not in this checkout
        log(f"stages skipped: {exc}")
        return None
    T, batch = 4, (32 if quick else 128)
    if RESNET20.exists():
        ann = fxsnn.models.cifar_resnet(20, weights=str(RESNET20)).eval()
        x, y = cifar("train_10k", 64 if quick else None, seed=1)
        what = f"CIFAR ResNet-20 (published weights), T = {T}, {len(y):,} calibration images (train_10k), batch {batch}"
    elif quick:
        ann = fxsnn.models.cifar_resnet(20).eval()
        x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
        what = f"CIFAR ResNet-20, random init and data (smoke form), T = {T}"
    else:
        log("stages skipped: ../shared/data is absent")
        return None
    g = torch.Generator().manual_seed(0)
    train = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, generator=g)
    calib = [xb for xb, _ in DataLoader(TensorDataset(x, y), batch_size=batch)]
    steps = dict(steps=1) if quick else dict(epochs=1)
    rows = []

    def timed(label, note, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        rows.append((label, time.perf_counter() - t0, note))
        log(f"  {label}: {rows[-1][1]:.2f} s")
        return out

    with torch.inference_mode():
        t0 = time.perf_counter()
        for xb in calib:
            ann(xb)
        ann_pass = time.perf_counter() - t0
    rows.append(("(reference) one ANN pass over the images", ann_pass, "inference mode"))
    gm = timed(
        "trace + insert recorders", "graph rewrites, no data", lambda: fxsnn.passes.insert_recorders(fxsnn.trace(ann))
    )
    timed("recorders (fxsnn.calibrate)", "one pass, no_grad", calibrate_, gm, calib, progress=False)
    q = timed("to DA-QCFS", "graph rewrite", fxsnn.passes.to_da_qcfs, gm, levels=T)
    timed(
        "DA calibration (fxsnn.calibrate_da)",
        "two passes per batch (g_OA and DA-QCFS), no_grad",
        calibrate_da_,
        q,
        calib,
        progress=False,
    )
    q = timed(
        "Stage 1 (fxsnn.recalibrate_bn)",
        "1 epoch" if not quick else "1 step",
        recalibrate_bn,
        q,
        train,
        progress=False,
        **steps,
    )
    snn = timed("lowering (lower_to_paraif)", "graph rewrite", fxsnn.passes.lower_to_paraif, q, T=T)
    timed(
        "Stage 2 (fxsnn.tune_delta_b)",
        "1 epoch" if not quick else "1 step",
        tune_delta_b,
        snn,
        train,
        T=T,
        progress=False,
        **steps,
    )
    return what, rows


def bench_neuron(quick: bool, threads: int, log) -> tuple[tuple, str]:
    """benchmarks/neuron_micro.py on ResNet-20's widest activation (tiny in the smoke form)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import neuron_micro

    shape = (8, 4, 6, 6) if quick else (256, 16, 32, 32)
    rows = neuron_micro.run(shape, (2,) if quick else (4, 8), threads=threads, min_time=0.01 if quick else 0.5)
    text = neuron_micro.table(rows)
    log(text)
    return shape, text


# -- the report -------------------------------------------------------------------------
def md_table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def ms(s: float) -> str:
    return f"{s * 1e3:,.0f}" if s >= 0.01 else f"{s * 1e3:.2f}"


def verdicts(results) -> list[str]:
    lines = []
    for name, (_, rows) in results.items():
        for r in rows:
            T = r["T"]
            checks = [
                ("rate ≤ 1.3×", r["rate_ratio"] <= 1.3, f"{r['rate_ratio']:.2f}×"),
                ("(opt-in) fused rate ≤ 1.3×", r["rate_fused_ratio"] <= 1.3, f"{r['rate_fused_ratio']:.2f}×"),
            ]
            for k in ("spike", "spike_mb"):
                checks.append(
                    (f"{LABEL[k]} ≤ 1.2·T× = {1.2 * T:.1f}×", r[k + "_ratio"] <= 1.2 * T, f"{r[k + '_ratio']:.2f}×")
                )
            checks.append(
                (
                    "rate peak memory ≤ 1.5× ANN",
                    r["rate_mem"] <= 1.5 * r["ann_mem"],
                    f"{r['rate_mem'] / max(r['ann_mem'], 1):.2f}×",
                )
            )
            if T >= 4:
                for k in ("spike", "spike_mb"):
                    checks.append(
                        (
                            f"{LABEL[k]} faster than serial",
                            r[k + "_vs_serial"] < 1,
                            f"time ratio {r[k + '_vs_serial']:.2f}",
                        )
                    )
            floor = r["spike_ratio"] / r["ann_TB_ratio"]
            lines.append(
                f"- {name}, T = {T}: "
                + "; ".join(f"{c} **{'holds' if ok else 'missed'}** ({v})" for c, ok, v in checks)
                + f"; spike ÷ its floor (ANN on T·B) = {floor:.2f}"
            )
    return lines


def report(args, info, load_before, load_after, results, stages, neuron, elapsed) -> str:
    cmd = "python benchmarks/speed.py " + " ".join(sys.argv[1:])
    parts = [
        "# Performance",
        "",
        "Written by `benchmarks/speed.py` (issue 4): everything above the notes marker comes from one run of:",
        "",
        f"    {cmd.strip()}",
        "",
        f"Run {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, {elapsed / 60:.1f} min.",
        "",
        *(f"- {k}: {v}" for k, v in info.items()),
        f"- machine load before the run: {load_before}; after: {load_after}"
        + (
            f"; 1-min load at the start of each model/T block: {min(LOADS):.1f} to {max(LOADS):.1f}"
            f" (this machine has {os.cpu_count()} cores)"
            if LOADS
            else ""
        ),
        "",
        "What is compared (all in `torch.inference_mode()`, eval mode, float32, the same input batch):",
        "",
        "- **ANN**: the original `nn.Module` (not traced, BN not folded).",
        "- **rate** / **spike**: the converted network (recorders with the running max → DA-QCFS with levels = T → DA",
        "  error calibration → `lower_to_paraif(T)`), in rate mode (time-collapsed, `[B, ...]` tensors) and in spike",
        "  mode (a real `[T·B, ...]` spike train between layers). Same network, same spike counts.",
        "- **rate, fused (opt-in)**: the rate-mode network after `fxsnn.modes.set_fused(snn)`: each neuron is one",
        "  `torch.compile`d pass (same operations, bit-identical output). Not the default; its first call per shape",
        "  compiles (the time is in the table's last column, excluded from the timing).",
        "- **spike, B/T per call**: the same spike-mode network fed the batch in T calls of B/T images, so that",
        "  its `[T·B/T, ...]` tensors have the ANN's size (same images, same work; only the batching differs).",
        "- **serial IF**: `fxsnn.passes.to_serial(snn)`, the classic simulation: T forward passes with stateful IF neurons",
        "  (batch B), state updated in place.",
        "- **ANN on T·B**: the ANN on the batch repeated T times: the work spike mode cannot avoid (every layer",
        "  sees T·B samples), so its ratio is the floor of spike mode's.",
        "",
        "Times are medians over interleaved rounds ("
        + ", ".join(f"{m}: {args.repeats or DEFAULT_REPEATS[m]}" for m in results)
        + ") after one warm-up call per variant;",
        "a ratio (×) is the median over rounds of time(variant) / time(ANN in the same round), so slow drifts in",
        "machine load cancel. Peak memory: the peak of the bytes held through PyTorch's CPU allocator during the",
        "warm-up forward (run under `torch.profiler`), above the level before it (weights and the input are",
        "excluded; oneDNN's internal scratch space is not seen).",
    ]
    parts += _model_tables(results)
    parts += ["", "## Targets (issue 4)", "", *verdicts(results)]
    parts += _neuron_and_stages(neuron, stages)
    return "\n".join(parts) + "\n"


def _neuron_and_stages(neuron, stages) -> list[str]:
    """The neuron micro-benchmark and the conversion-stage timings."""
    parts = []
    shape, text = neuron
    parts += [
        "",
        "## The neuron alone (`benchmarks/neuron_micro.py`)",
        "",
        f"Input {list(shape)} (spike mode: the same tensor repeated T times). Forward rows in inference mode;",
        "forward + backward rows with x and Δb requiring gradients (Stage 2).",
        "",
        text,
    ]
    if stages is not None:
        what, rows = stages
        parts += [
            "",
            "## Conversion stages: wall time",
            "",
            what,
            "",
            md_table(["stage", "seconds", "note"], [[k, f"{v:.2f}", n] for k, v, n in rows]),
        ]
    else:
        parts += ["", "## Conversion stages", "", "Skipped (../shared/data absent, or `--no-stages`)."]
    return parts


def _model_tables(results) -> list[str]:
    """Per model: time per batch and peak memory, one row per T."""
    parts = []
    for name, (what, rows) in results.items():
        parts += [
            "",
            f"## {name}: time per batch",
            "",
            what,
            "",
            md_table(
                ["T"]
                + [f"{LABEL[k]} ms (×)" for k in VARIANTS]
                + ["spike ÷ serial", "spike B/T ÷ serial", "fused: first call s"],
                [
                    [r["T"]]
                    + [f"{ms(r[k])} ({r[k + '_ratio']:.2f}×)" for k in VARIANTS]
                    + [f"{r['spike_vs_serial']:.2f}", f"{r['spike_mb_vs_serial']:.2f}", f"{r['compile_s']:.1f}"]
                    for r in rows
                ],
            ),
        ]
        parts += [
            "",
            f"## {name}: peak memory of one forward (MiB above weights + input)",
            "",
            md_table(
                ["T", "ANN"] + [f"{LABEL[k]} (× ANN)" for k in MEM_VARIANTS[1:]],
                [
                    [r["T"], f"{r['ann_mem'] / 2**20:,.0f}"]
                    + [
                        f"{r[k + '_mem'] / 2**20:,.0f} ({r[k + '_mem'] / max(r['ann_mem'], 1):.2f}×)"
                        for k in MEM_VARIANTS[1:]
                    ]
                    for r in rows
                ],
            ),
        ]
    return parts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="resnet20,resnet18", help="comma-separated: resnet20, resnet18")
    ap.add_argument("--T", default="2,4,8,16", help="comma-separated time steps")
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds per T after the warm-up call (default: 5 for resnet20, 3 for resnet18)",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--no-stages", action="store_true", help="skip the conversion-stage wall times")
    ap.add_argument("--quick", action="store_true", help="smoke form: tiny batches and images, one round")
    ap.add_argument("--out", default=str(ROOT / "docs" / "performance.md"), help="the Markdown report to write")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats = 1
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*no channel ever activated.*")
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    t0, before = time.perf_counter(), load()
    log(before)
    Ts = [int(t) for t in args.T.split(",")]
    results = {name: bench_model(name, Ts, args.repeats, args.quick, log) for name in args.models.split(",")}
    neuron = bench_neuron(args.quick, args.threads, log)
    stages = None if args.no_stages else bench_stages(args.quick, log)
    after = load()
    text = report(args, machine(), before, after, results, stages, neuron, time.perf_counter() - t0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and NOTES in out.read_text():  # keep the hand-written analysis below the marker
        text += "\n" + NOTES + out.read_text().split(NOTES, 1)[1]
    out.write_text(text)
    log(f"{after}\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
