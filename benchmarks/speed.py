"""Speed and memory of a converted network against its ANN (issues 4 and 13); writes docs/performance.md.

    python benchmarks/speed.py                          # the full run (estimated ~8 min on 2 idle CPU threads)
    python benchmarks/speed.py --quick --out /tmp/p.md  # smoke form: tiny sizes, seconds (used by the tests)

For ResNet-20 (CIFAR, batch 256) and torchvision ResNet-18 (224x224, batch 32, random init: dense CPU
timing does not depend on the weights) and each T, it times one batch of: the ANN, the converted network
in rate mode and in spike mode, fxsnn's serial step-by-step IF simulation (``fxsnn.passes.to_serial``)
and, when ``spikingjelly`` is installed, SpikingJelly's multi-step IF network with the same weights and
thresholds (:func:`spikingjelly_net`). All variants of one T run in interleaved rounds after one warm-up
call each; a ratio is the median over rounds of ``time(variant) / time(ANN in the same round)``.

Peak memory: each measurement runs in a fresh subprocess (``--probe MODEL:VARIANT:T``) that builds the
network, resets the kernel's RSS high-water mark (``/proc/self/clear_refs``), runs one forward and reports
``VmHWM`` minus the RSS before the forward (Linux only; everything the process touched, torch's allocator,
oneDNN's scratch space and glibc's heap included). Then a torch.profiler table per op and a per-layer
breakdown of one spike-mode forward, the neuron micro-benchmark and the wall time of each conversion stage
(ResNet-20, T = 4, 2,000 calibration images; needs ../shared/data).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import fx, nn

import fxsnn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import shared_data  # noqa: E402  (one loader for benchmarks and tests)
from shared_data import RESNET20  # noqa: E402

VARIANTS = ("ann", "rate", "spike", "serial", "sj")
LOADS: list[float] = []  # 1-min load average sampled at the start of each model/T block
NOTES = "<!-- hand-written notes below this line are kept when benchmarks/speed.py rewrites the file -->"
DEFAULT_REPEATS = {"resnet20": 3, "resnet18": 2}  # ResNet-18 at T = 16: about 50 s per round on 2 threads
PROFILE_T = {"resnet20": (4, 16), "resnet18": (4,)}
LABEL = {
    "ann": "ANN",
    "rate": "rate",
    "spike": "spike",
    "serial": "serial (fxsnn)",
    "sj": "SpikingJelly IF",
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


# -- SpikingJelly's serial IF network with the same weights --------------------------------
class _SJNeuron(nn.Module):
    """``x ↦ θ_post · IF((x + ψ_DA) / θ')`` on a ``[T·B, C, ...]`` input, with SpikingJelly's multi-step IFNode.

    fxsnn's serial IF neuron (:class:`fxsnn.nn.SerialIF`: ``v⁰ = θ_pre/2``, reset by subtraction, ``θ' = θ_pre − Δb``)
    in SpikingJelly's units: its IFNode takes one scalar threshold, so the per-channel θ' is applied by scaling
    the input (threshold 1, initial potential θ_pre/(2θ')), as SpikingJelly's ann2snn Converter does per layer
    (VoltageScaler → IFNode → VoltageScaler). Reset by subtraction (``v_reset=None``).
    """

    def __init__(self, neuron_: nn.Module, T: int):
        from spikingjelly.activation_based import neuron

        super().__init__()
        self.T = T
        theta = neuron_.theta_pre - neuron_.delta_b.detach()
        self.register_buffer("shift", neuron_.psi_da.clone())
        self.register_buffer("inv", 1.0 / theta)
        self.register_buffer("v0", 0.5 * neuron_.theta_pre / theta)
        self.register_buffer("post", neuron_.theta_post.clone())
        self.node = neuron.IFNode(v_threshold=1.0, v_reset=None, step_mode="m")

    def forward(self, x):
        shape = (-1,) + (1,) * (x.dim() - 2)
        u = (x + self.shift.view(shape)) * self.inv.view(shape)
        u = u.reshape((self.T, -1) + tuple(x.shape[1:]))
        # v⁰ = θ_pre/2 in units of θ' (reset_net set it to 0); SpikingJelly takes a float or a full-shape state
        self.node.v = self.v0.view(shape).expand(u.shape[1:]).contiguous()
        s = self.node(u)
        return s.flatten(0, 1) * self.post.view(shape)


class _SJNet(nn.Module):
    """The multi-step network: input repeated T times, every layer on ``[T·B, ...]``, output the time-mean."""

    def __init__(self, body: nn.Module, T: int):
        super().__init__()
        self.body, self.T = body, T

    def forward(self, x):
        from spikingjelly.activation_based import functional

        functional.reset_net(self.body)
        y = self.body(x.repeat((self.T,) + (1,) * (x.dim() - 1)))
        return y.reshape((self.T, -1) + tuple(y.shape[1:])).mean(0)


def _is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), nn.ReLU)
    return (node.op == "call_function" and node.target in (torch.relu, nn.functional.relu)) or (
        node.op == "call_method" and node.target == "relu"
    )


def spikingjelly_net(ann: nn.Module, snn: fx.GraphModule, T: int) -> nn.Module | None:
    """The ANN with its i-th ReLU replaced by a SpikingJelly IF neuron with the i-th ParallelIF's θ', ψ_DA, θ_post.

    The same network as ``fxsnn.passes.to_serial(snn)`` up to float rounding (``(x + ψ_DA)/θ'`` against ``x + ψ_DA``
    compared with θ'), run SpikingJelly's way: every layer on the ``[T·B, ...]`` input repeated T times.

    ``None`` when spikingjelly is not installed.
    """
    try:
        import spikingjelly.activation_based  # noqa: F401
    except ImportError:
        return None
    by_name = fxsnn.modes.neurons(snn)
    neurons = [by_name[n.target] for n in snn.graph.nodes if n.op == "call_module" and n.target in by_name]
    gm = fx.symbolic_trace(copy.deepcopy(ann))
    relus = [n for n in gm.graph.nodes if _is_relu(gm, n)]
    if len(relus) != len(neurons):
        raise SystemExit(f"spikingjelly_net: {len(relus)} ReLUs in the ANN but {len(neurons)} neurons in the SNN")
    for i, (node, m) in enumerate(zip(relus, neurons)):
        gm.add_submodule(f"sj_if_{i}", _SJNeuron(m, T))
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(f"sj_if_{i}", (node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    gm.recompile()
    return _SJNet(gm, T).eval()


# -- measurement ------------------------------------------------------------------------
def variants(name: str, ann, x, calib, T: int) -> dict:
    """``{variant: () -> output}`` for one model and T (the SpikingJelly one only when it is installed)."""
    q = da_qcfs(ann, calib, T)
    rate = fxsnn.passes.lower_to_paraif(q, T=T, mode="rate").eval()
    spike = fxsnn.passes.lower_to_paraif(q, T=T, mode="spike").eval()
    serial = fxsnn.passes.to_serial(spike).eval()
    fns = {"ann": lambda: ann(x), "rate": lambda: rate(x), "spike": lambda: spike(x), "serial": lambda: serial(x)}
    sj = spikingjelly_net(ann, spike, T)
    if sj is not None:
        fns["sj"] = lambda: sj(x)
    fns["_spike_net"] = spike  # for the profile; not timed
    return fns


COLD = ("ann", "rate", "spike")  # warmed up; "serial" runs the ANN's shapes and "sj" spike mode's (a stem aside)


def rounds(fns: dict, repeats: int, warm=COLD) -> dict[str, list[float]]:
    """Interleaved timing: one warm-up call of each variant in ``warm`` (default ANN, rate and spike: oneDNN
    primitives per shape, spike mode's heap), then ``repeats`` rounds, the order rotating per round. By default
    the serial variants get no warm-up call of their own: each of their T steps runs layers of shapes already
    warmed up (so their first step's cost is in the timing)."""
    times = {k: [] for k in fns}
    names = list(fns)
    with torch.inference_mode():
        for k in warm:
            fns[k]()
        for r in range(repeats):
            for k in names[r % len(names) :] + names[: r % len(names)]:
                t0 = time.perf_counter()
                fns[k]()
                times[k].append(time.perf_counter() - t0)
    return times


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(field)


def probe(spec: str, quick: bool) -> int:
    """Child process of :func:`peak_rss`: build ``MODEL:VARIANT:T``, run one forward, print its peak RSS rise."""
    name, variant, T = spec.split(":")
    _, ann, x, calib = model_case(name, quick)
    fn = variants(name, ann, x, calib, int(T))[variant]
    # hand the heap memory that building the variants freed back to the kernel, so that the forward's buffers
    # are counted even where they would reuse it (without this the ANN's forward read as a 0 MiB rise)
    with contextlib.suppress(OSError, AttributeError):  # not glibc: measure as it is
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    with torch.inference_mode():
        fn()
    print(json.dumps({"peak_bytes": (_status_kib("VmHWM") - before) * 1024}))
    return 0


def peak_rss(name: str, variant: str, T: int, args) -> int | None:
    """Peak RSS rise (bytes) of one forward in a fresh subprocess; ``None`` where /proc is unavailable."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    cmd = [sys.executable, __file__, "--probe", f"{name}:{variant}:{T}", "--threads", str(args.threads)]
    proc = subprocess.run(cmd + (["--quick"] if args.quick else []), capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"memory probe {cmd} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_bytes"]


def machine() -> dict[str, str]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    sj = "absent"
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        import spikingjelly  # noqa: F401

        sj = version("spikingjelly")
    return {
        "CPU": f"{cpu}, {os.cpu_count()} logical cores",
        "torch threads": str(torch.get_num_threads()),
        "software": f"Python {platform.python_version()}, torch {torch.__version__}, spikingjelly {sj}, "
        f"{platform.system()} {platform.release()}",
    }


def load() -> str:
    try:
        return "load average {:.2f} / {:.2f} / {:.2f} (1 / 5 / 15 min)".format(*os.getloadavg())
    except OSError:
        return "load average unavailable"


# -- where the time goes ------------------------------------------------------------------
def op_profile(net, x, rows: int = 8) -> list[tuple[str, float, float]]:
    """``(op, self CPU ms, % of the forward)`` of one spike-mode forward, the ``rows`` largest, then the rest."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        net(x)
    ops = sorted(((e.key, e.self_cpu_time_total / 1e3) for e in prof.key_averages()), key=lambda r: -r[1])
    total = sum(t for _, t in ops) or 1.0
    out = [(k, t, 100 * t / total) for k, t in ops[:rows]]
    rest = sum(t for _, t in ops[rows:])
    return out + [("(all other ops)", rest, 100 * rest / total)]


def layer_profile(net: fx.GraphModule, x) -> list[tuple[str, int, float, float]]:
    """``(layer kind, calls, ms, % of the forward)`` of one spike-mode forward, timed by module hooks.

    The ops outside modules (residual adds, reshapes: ``call_function`` nodes) are the remainder.
    """
    spent: dict[str, list[float]] = {}
    start: dict[int, float] = {}
    hooks = []
    for m in net.modules():
        if m is net or list(m.children()):
            continue
        hooks.append(m.register_forward_pre_hook(lambda mod, _: start.__setitem__(id(mod), time.perf_counter())))
        hooks.append(
            m.register_forward_hook(
                lambda mod, _i, _o: spent.setdefault(type(mod).__name__, []).append(
                    time.perf_counter() - start[id(mod)]
                )
            )
        )
    with torch.inference_mode():
        t0 = time.perf_counter()
        net(x)
        total = time.perf_counter() - t0
    for h in hooks:
        h.remove()
    rows = sorted(((k, len(v), 1e3 * sum(v)) for k, v in spent.items()), key=lambda r: -r[2])
    rest = total * 1e3 - sum(r[2] for r in rows)
    rows.append(("(outside modules: adds, reshapes)", 0, rest))
    return [(k, n, t, 100 * t / (total * 1e3)) for k, n, t in rows]


# -- the runs ---------------------------------------------------------------------------
def bench_model(name: str, Ts, args, log) -> dict:
    what, ann, x, calib = model_case(name, args.quick)
    repeats = args.repeats or DEFAULT_REPEATS[name]
    log(f"{name}: {what}")
    rows, profiles = [], {}
    for T in Ts:
        fns = variants(name, ann, x, calib, T)
        net = fns.pop("_spike_net")
        LOADS.append(os.getloadavg()[0])
        times = rounds(fns, repeats)
        row = {"T": T}
        for k in fns:
            row[k] = statistics.median(times[k])
            row[k + "_ratio"] = statistics.median(t / a for t, a in zip(times[k], times["ann"]))
            row[k + "_vs_spike"] = statistics.median(s / t for s, t in zip(times["spike"], times[k]))
        rows.append(row)
        log(f"  T={T}: " + ", ".join(f"{LABEL[k]} {row[k] * 1e3:.0f} ms ({row[k + '_ratio']:.2f}x)" for k in fns))
        if T in PROFILE_T[name] or (args.quick and T == Ts[-1]):
            profiles[T] = (op_profile(net, x), layer_profile(net, x))
        del fns, net
    memory = bench_memory(name, Ts, args, log) if not args.no_memory else None
    return {"what": what, "rows": rows, "profiles": profiles, "memory": memory, "repeats": repeats}


def bench_memory(name: str, Ts, args, log) -> dict:
    """``{(variant, T): peak bytes}``: the ANN once, spike mode at every T, the serial simulation at the largest."""
    specs = [("ann", Ts[0])] + [("spike", T) for T in Ts] + [("serial", Ts[-1])]
    if args.quick:  # the smoke form: two probes (each a fresh interpreter), on the first model only
        specs = [("ann", Ts[0]), ("spike", Ts[-1])] if name == args.models.split(",")[0] else []
    out = {}
    for variant, T in specs:
        out[(variant, T)] = peak_rss(name, variant, T, args)
        if out[(variant, T)] is not None:
            log(f"  peak RSS rise {variant} T={T}: {out[(variant, T)] / 2**20:.0f} MiB")
    return out


def bench_stages(quick: bool, log) -> tuple[str, list[tuple[str, float, str]]] | None:
    """Wall time of each conversion stage, ResNet-20 at T = 4 (fxsnn.convert's pieces, one epoch per stage)."""
    from torch.utils.data import DataLoader, TensorDataset

    from fxsnn.calibration import calibrate_, calibrate_da_
    from fxsnn.calibration.stage1 import recalibrate_bn
    from fxsnn.calibration.stage2 import tune_delta_b

    T, batch, n = 4, (32 if quick else 128), (64 if quick else 2000)
    if RESNET20.exists():
        ann = fxsnn.models.cifar_resnet(20, weights=str(RESNET20)).eval()
        x, y = cifar("train_10k", n, seed=1)
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
    epoch = "1 step" if quick else "1 epoch"
    rows = []

    def timed(label, note, fn, *a, **kw):
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        rows.append((label, time.perf_counter() - t0, note))
        log(f"  {label}: {rows[-1][1]:.2f} s")
        return out

    def ann_pass():
        with torch.inference_mode():
            for xb in calib:
                ann(xb)

    timed("(reference) one ANN pass over the images", "inference mode", ann_pass)
    gm = timed(
        "trace + insert recorders", "graph rewrites, no data", lambda: fxsnn.passes.insert_recorders(fxsnn.trace(ann))
    )
    timed("recorders (fxsnn.calibrate)", "one pass, no_grad", calibrate_, gm, calib, progress=False)
    q = timed("to DA-QCFS", "graph rewrite", fxsnn.passes.to_da_qcfs, gm, levels=T)
    da_note = "two passes per batch (g_OA and DA-QCFS), no_grad"
    timed("DA calibration (fxsnn.calibrate_da)", da_note, calibrate_da_, q, calib, progress=False)
    q = timed("Stage 1 (fxsnn.recalibrate_bn)", epoch, recalibrate_bn, q, train, progress=False, **steps)
    snn = timed("lowering (lower_to_paraif)", "graph rewrite", fxsnn.passes.lower_to_paraif, q, T=T)
    timed("Stage 2 (fxsnn.tune_delta_b)", epoch, tune_delta_b, snn, train, T=T, progress=False, **steps)
    return what, rows


def bench_neuron(quick: bool, threads: int, log) -> tuple[tuple, str]:
    """benchmarks/neuron_micro.py on ResNet-20's widest activation (tiny in the smoke form)."""
    import neuron_micro

    shape = (8, 4, 6, 6) if quick else (256, 16, 32, 32)
    rows = neuron_micro.run(shape, (2,) if quick else (4, 8), threads=threads, min_time=0.01 if quick else 0.3)
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
    """One line per model and T: the targets of issues 4 and 13, held or missed."""
    lines = []
    for name, res in results.items():
        for r in res["rows"]:
            T = r["T"]
            checks = [
                ("rate ≤ 1.3×", r["rate_ratio"] <= 1.3, f"{r['rate_ratio']:.2f}×"),
                (f"spike ≤ 1.2·T× = {1.2 * T:.1f}×", r["spike_ratio"] <= 1.2 * T, f"{r['spike_ratio']:.2f}×"),
                ("spike faster than serial", r["serial_vs_spike"] < 1, f"time ratio {r['serial_vs_spike']:.2f}"),
            ]
            if "sj" in r:
                checks.append(
                    ("spike faster than SpikingJelly", r["sj_vs_spike"] < 1, f"time ratio {r['sj_vs_spike']:.2f}")
                )
            lines.append(
                f"- {name}, T = {T}: "
                + "; ".join(f"{c} **{'holds' if ok else 'missed'}** ({v})" for c, ok, v in checks)
            )
    return lines


def _header(args, info, load_before, load_after, results, elapsed) -> list[str]:
    cmd = "python benchmarks/speed.py " + " ".join(a for a in sys.argv[1:])
    return [
        "# Performance",
        "",
        "Written by `benchmarks/speed.py` (issues 4 and 13): everything above the notes marker comes from one run of:",
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
        "  mode (a real `[T·B, ...]` spike train between layers; the layers before the first neuron run once per",
        "  image, direct encoding). Same network, same spike counts.",
        "- **serial (fxsnn)**: `fxsnn.passes.to_serial(snn)`, the classic simulation: T forward passes of batch B",
        "  with stateful IF neurons, state updated in place.",
        "- **SpikingJelly IF** (only when `spikingjelly` is installed): the ANN with each ReLU replaced by",
        "  SpikingJelly's `IFNode` (multi-step mode, `v_reset=None`: reset by subtraction, threshold 1, initial",
        "  potential θ_pre/(2θ') ) between a per-channel scaling of the input, `(x + ψ_DA)/θ'`, and of the spikes, `·θ_post`,",
        "  with the converted network's θ' = θ_pre − Δb, ψ_DA and θ_post (the construction of SpikingJelly's",
        "  ann2snn Converter, VoltageScaler → IFNode → VoltageScaler, per channel instead of per layer): the",
        "  serial network of the row above up to float rounding, run SpikingJelly's way, with the input repeated",
        "  T times and every layer on `[T·B, ...]`; the output is the time-mean.",
        "",
        "Times are medians over interleaved rounds ("
        + ", ".join(f"{m}: {res['repeats']}" for m, res in results.items())
        + ") after one warm-up call of ANN, rate and spike (the serial variants run",
        "shapes these warmed up: the ANN's, and spike mode's but for the stem);",
        "a ratio (×) is the median over rounds of time(variant) / time(ANN in the same round), so slow drifts in",
        "machine load cancel; `÷ spike` is the median of time(spike) / time(variant): below 1, spike mode is faster.",
        "Peak memory: the rise of the process's resident set (Linux `VmHWM`, reset through `/proc/self/clear_refs`",
        "after the network is built) during one forward, each measurement in a fresh subprocess: everything the",
        "forward touched, torch's allocator, oneDNN's scratch space and the glibc heap included.",
    ]


def report(args, info, load_before, load_after, results, stages, neuron, elapsed) -> str:
    parts = _header(args, info, load_before, load_after, results, elapsed)
    parts += _model_tables(results)
    parts += ["", "## Targets (issue 4) and spike mode (issue 13)", "", *verdicts(results)]
    parts += _profile_tables(results)
    parts += _neuron_and_stages(neuron, stages)
    return "\n".join(parts) + "\n"


def _neuron_and_stages(neuron, stages) -> list[str]:
    """The neuron micro-benchmark and the conversion-stage timings."""
    shape, text = neuron
    parts = [
        "",
        "## The neuron alone (`benchmarks/neuron_micro.py`)",
        "",
        f"Input {list(shape)} (spike mode: the same tensor repeated T times). Forward rows in inference mode;",
        "forward + backward rows with x and Δb requiring gradients (Stage 2).",
        "",
        text,
    ]
    if stages is None:
        return parts + ["", "## Conversion stages", "", "Skipped (../shared/data absent, or `--no-stages`)."]
    what, rows = stages
    table = md_table(["stage", "seconds", "note"], [[k, f"{v:.2f}", n] for k, v, n in rows])
    return parts + ["", "## Conversion stages: wall time", "", what, "", table]


def _time_table(rows) -> str:
    keys = [k for k in VARIANTS if k in rows[0]]
    header = (
        ["T"] + [f"{LABEL[k]} ms (×)" for k in keys] + [f"spike ÷ {LABEL[k]}" for k in keys if k in ("serial", "sj")]
    )
    body = [
        [r["T"]]
        + [f"{ms(r[k])} ({r[k + '_ratio']:.2f}×)" for k in keys]
        + [f"{r[k + '_vs_spike']:.2f}" for k in keys if k in ("serial", "sj")]
        + []
        for r in rows
    ]
    return md_table(header + ["1.2·T"], [b + [f"{1.2 * r['T']:.1f}"] for b, r in zip(body, rows)])


def _memory_table(memory) -> str:
    ann = next(v for (k, _), v in memory.items() if k == "ann") or 1
    rows = [[LABEL[k], T, f"{v / 2**20:,.0f}", f"{v / ann:.2f}×"] for (k, T), v in memory.items() if v is not None]
    return md_table(["variant", "T", "peak RSS rise MiB", "× ANN"], rows)


def _model_tables(results) -> list[str]:
    """Per model: time per batch (one row per T) and peak memory."""
    parts = []
    for name, res in results.items():
        parts += ["", f"## {name}: time per batch", "", res["what"], "", _time_table(res["rows"])]
        parts += ["", f"## {name}: peak memory of one forward (RSS high-water mark, fresh process)", ""]
        if res["memory"] is None or all(v is None for v in res["memory"].values()):
            parts.append("Not measured (`--no-memory`, the smoke form's second model, or no Linux /proc).")
        else:
            parts.append(_memory_table(res["memory"]))
    return parts


def _profile_tables(results) -> list[str]:
    parts = []
    for name, res in results.items():
        for T, (ops, layers) in res["profiles"].items():
            parts += [
                "",
                f"## {name}, T = {T}: where one spike-mode forward spends its time",
                "",
                "Per op (torch.profiler, self CPU time):",
                "",
                md_table(["op", "self ms", "%"], [[k, f"{t:,.1f}", f"{p:.1f}"] for k, t, p in ops]),
                "",
                "Per layer kind (module forward hooks, wall time, one more forward):",
                "",
                md_table(["layer", "calls", "ms", "%"], [[k, n, f"{t:,.1f}", f"{p:.1f}"] for k, n, t, p in layers]),
            ]
    return parts


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="resnet20,resnet18", help="comma-separated: resnet20, resnet18")
    ap.add_argument("--T", default="2,4,8,16", help="comma-separated time steps")
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds per T after the warm-up call (default: 3 for resnet20, 2 for resnet18)",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--no-stages", action="store_true", help="skip the conversion-stage wall times")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--quick", action="store_true", help="smoke form: tiny batches and images, one round")
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # MODEL:VARIANT:T, internal (peak_rss)
    ap.add_argument("--out", default=str(ROOT / "docs" / "performance.md"), help="the Markdown report to write")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.quick:
        args.repeats = 1
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*no channel ever activated.*")
    if args.probe:
        return probe(args.probe, args.quick)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    t0, before = time.perf_counter(), load()
    log(before)
    Ts = [int(t) for t in args.T.split(",")]
    results = {name: bench_model(name, Ts, args, log) for name in args.models.split(",")}
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
