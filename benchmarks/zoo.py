"""Model zoo (issue 10, item 10): real architectures through trace → recorders → QCFS → lowering; writes docs/zoo.md.

    python benchmarks/zoo.py                        # the torchvision (and, when installed, timm) zoo
    python benchmarks/zoo.py --models resnet18,vgg11_bn --out /tmp/zoo.md

Every model is built with random weights (``torch.manual_seed(0)``, eval mode, random BatchNorm running
statistics so that BN is not the identity), fed small random images, and run through
``fxsnn.trace`` → ``fxsnn.passes.insert_recorders`` → ``fxsnn.calibrate`` (two random batches) →
``fxsnn.passes.to_qcfs(levels=T)`` → ``fxsnn.passes.lower_to_paraif(T)``. A model with analog
nonlinearities (GELU, SiLU, Hardswish, Sigmoid, ...) is run with ``allow_analog=True`` where
``insert_recorders`` has that keyword, and is marked a hybrid. Per model (:func:`check_model`): the sites,
the analog ops left (:func:`fxsnn.graph.sites.find_analog_ops`), whether rate mode runs and is bit-identical
to the QCFS network (or what blocks it), the fraction of spike counts where spike and rate mode differ
(float32 rounding at bin edges, the tolerance of :func:`fxsnn.testing.check_rate_matches_spike`: 1 %),
whether the user's model came back unchanged, and the conversion's wall time. tests/test_zoo.py runs a
selection of the same cases (``FXSNN_ZOO=1``).
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import platform
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

import fxsnn
from fxsnn.errors import FxsnnError, ModeError
from fxsnn.graph.sites import find_analog_ops
from fxsnn.report.probes import spike_counts

ROOT = Path(__file__).resolve().parents[1]

# name: input side (the smallest that the architecture takes, or close to it)
TORCHVISION = {
    "resnet18": 32,
    "resnet50": 32,
    "resnext50_32x4d": 32,
    "wide_resnet50_2": 32,
    "vgg11_bn": 32,
    "vgg16": 32,
    "alexnet": 64,
    "squeezenet1_0": 32,
    "squeezenet1_1": 32,
    "densenet121": 32,
    "mobilenet_v2": 32,
    "mobilenet_v3_small": 32,
    "shufflenet_v2_x0_5": 32,
    "mnasnet0_5": 32,
    "regnet_x_400mf": 32,
    "regnet_y_400mf": 32,
    "efficientnet_b0": 32,
    "googlenet": 32,
    "inception_v3": 75,
    "convnext_tiny": 32,
}
TIMM = {"resnet18d": 32, "dpn68": 32, "repvgg_a0": 32, "regnetx_002": 32, "ese_vovnet19b_dw": 32}


@dataclass
class ZooRow:
    """One model's result (see the module docstring); ``error`` is set when a step raised."""

    name: str
    source: str
    side: int
    sites: int = 0
    analog: dict[str, int] = field(default_factory=dict)
    hybrid: bool = False
    rate: str = ""  # "bit-identical", "differs (max |Δ| ...)" or the rate-mode blocker
    rate_exact: bool | None = None
    mismatched: int | None = None
    counts: int | None = None
    unchanged: bool | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def mismatch_rate(self) -> float | None:
        return None if self.mismatched is None else self.mismatched / max(self.counts or 0, 1)


def build(name: str, source: str = "torchvision") -> nn.Module:
    """The model with random weights in eval mode, its BatchNorm running statistics randomised."""
    torch.manual_seed(0)
    if source == "timm":
        import timm

        model = timm.create_model(name, pretrained=False)
    else:
        import torchvision

        kw = {"init_weights": False} if name in ("inception_v3", "googlenet") else {}
        if name in ("inception_v3", "googlenet"):
            kw["aux_logits"] = False
        model = torchvision.models.get_model(name, weights=None, **kw)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model.eval()


def _snapshot(model: nn.Module):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, repr(model)


def _same(before, after) -> bool:
    return before[1] == after[1] and all(torch.equal(v, after[0][k]) for k, v in before[0].items())


def _tensors(out) -> list[torch.Tensor]:
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def _bit_identical(a, b) -> tuple[bool, float]:
    ta, tb = _tensors(a), _tensors(b)
    same = len(ta) == len(tb) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(ta, tb))
    diff = max((float((x - y).abs().max()) for x, y in zip(ta, tb) if x.shape == y.shape and x.numel()), default=0.0)
    return same, diff


def _recorder_kwargs(gm) -> dict:
    """``allow_analog=True`` where the model has analog ops (MaxPool included) and ``insert_recorders`` takes it."""
    if len(find_analog_ops(gm)) and "allow_analog" in inspect.signature(fxsnn.passes.insert_recorders).parameters:
        return {"allow_analog": True}
    return {}


def convert_pipeline(gm, calib: list[torch.Tensor], T: int):
    """insert_recorders → calibrate → to_qcfs → lower_to_paraif (spike mode) on a traced model: ``(qcfs, snn)``."""
    rec = fxsnn.passes.insert_recorders(gm, **_recorder_kwargs(gm))
    rec = fxsnn.calibrate(rec, calib, progress=False)
    q = fxsnn.passes.to_qcfs(rec, levels=T)
    return q, fxsnn.passes.lower_to_paraif(q, T=T, mode="spike")


@torch.no_grad()
def _modes(row: ZooRow, q, snn, x) -> None:
    """Rate mode against the QCFS network (bit for bit), then spike mode against rate mode (spike counts)."""
    try:
        fxsnn.set_mode(snn, "rate")
    except ModeError as exc:  # "rate mode cannot run node 'n' (module 'm') (and k more): this op is not affine ..."
        row.rate = "blocked: " + str(exc).split(": this op")[0].replace("rate mode cannot run ", "")[:200]
        return
    same, diff = _bit_identical(q(x), snn(x))
    row.rate_exact = same
    row.rate = "bit-identical" if same else f"differs (max |Δ| {diff:.3g})"
    if row.hybrid:  # an analog op on a spike train is not the op on its time-mean: no spike-vs-rate claim
        return
    rate_counts = spike_counts(snn, x)
    fxsnn.set_mode(snn, "spike")
    spk = spike_counts(snn, x)
    row.mismatched = sum(int((rate_counts[k] != spk[k]).sum()) for k in rate_counts)
    row.counts = sum(v.numel() for v in rate_counts.values())


def check_model(name: str, model: nn.Module, *, side: int, T: int = 4, batch: int = 2, source: str = "") -> ZooRow:
    """Run one model through the pipeline and the checks; every failure is recorded in ``row.error``."""
    row = ZooRow(name, source, side)
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(batch, 3, side, side, generator=g) for _ in range(2)]
    x = torch.randn(batch, 3, side, side, generator=g)
    before = _snapshot(model)
    t0 = time.perf_counter()
    try:
        gm = fxsnn.trace(model)
        for a in find_analog_ops(gm):
            row.analog[a.kind] = row.analog.get(a.kind, 0) + 1
        row.hybrid = any(not k.startswith("MaxPool") for k in row.analog)
        q, snn = convert_pipeline(gm, calib, T)
        row.seconds = time.perf_counter() - t0
        row.sites = len(fxsnn.find_sites(snn))
        _modes(row, q, snn, x)
    except (FxsnnError, RuntimeError, TypeError, ValueError) as exc:
        row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0].split('; ')[0][:200]}"
        traceback.print_exc()
    row.unchanged = _same(before, _snapshot(model))
    return row


# -- the page ---------------------------------------------------------------------------
def _cell(row: ZooRow) -> list[str]:
    analog = ", ".join(f"{k} ×{v}" for k, v in sorted(row.analog.items())) or "none"
    mism = (
        "—" if row.mismatch_rate is None else f"{100 * row.mismatch_rate:.3f} % ({row.mismatched:,} of {row.counts:,})"
    )
    status = "refused: " + row.error if row.error else ("hybrid (allow_analog)" if row.hybrid else "spiking")
    return [
        f"{row.source} `{row.name}`",
        f"{row.side}×{row.side}",
        status,
        str(row.sites),
        analog,
        row.rate or "—",
        mism,
        {True: "yes", False: "**no**", None: "—"}[row.unchanged],
        "—" if row.error else f"{row.seconds:.2f}",
    ]


def page(rows: list[ZooRow], T: int, cmd: str, elapsed: float) -> str:
    header = [
        "model",
        "input",
        "result",
        "sites",
        "analog ops left",
        "rate mode vs QCFS",
        "spike/rate count mismatch",
        "model unchanged",
        "conversion s",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(_cell(r)) + " |" for r in rows]
    exact = sum(r.rate_exact is True for r in rows)
    ran = sum(r.rate_exact is not None for r in rows)
    return "\n".join(
        [
            "# Model zoo",
            "",
            f"Written by `benchmarks/zoo.py` (issue 10, item 10) from one run of `{cmd}`",
            f"({datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, {elapsed / 60:.1f} min, 1 torch thread,",
            f"torch {torch.__version__}, Python {platform.python_version()}).",
            "",
            "Each model: random weights (seed 0) with random BatchNorm running statistics, eval mode, batch 2 of",
            "random images of the size shown; `fxsnn.trace` → `insert_recorders` → `calibrate` (two random batches)",
            f"→ `to_qcfs(levels={T})` → `lower_to_paraif(T={T})`. Columns:",
            "",
            "- **result**: *spiking* (every nonlinearity between layers is a spiking site), *hybrid* (analog ops",
            "  such as GELU, SiLU, Hardswish or Sigmoid stay analog: run with `allow_analog=True` where",
            "  `insert_recorders` has that keyword), or *refused* with the error a step raised (first clause).",
            "- **sites**: `fxsnn.find_sites` on the lowered network; **analog ops left**: `find_analog_ops` on the",
            "  traced model, by kind (a MaxPool is listed there too; after a neuron it is exact in rate mode).",
            "- **rate mode vs QCFS**: the lowered network in rate mode against the QCFS network on the same input,",
            "  compared bit for bit (`torch.equal` on every output tensor), or what blocks rate mode",
            "  (`fxsnn.graph.rate_mode_blockers`).",
            "- **spike/rate count mismatch**: spike counts that differ between spike mode and rate mode, over all",
            "  neurons and images (float32 rounding at bin edges: `mean_t(layer(s_t))` and `layer(mean_t s_t)` round",
            "  differently; `fxsnn.testing.check_rate_matches_spike` allows 1 %). Not reported for hybrids: an analog",
            "  op applied to a spike train is not the op applied to its time-mean.",
            "- **model unchanged**: the user's model's state dict (bit for bit) and repr after the conversion.",
            "- **conversion s**: wall time of trace → lowering, calibration included (machine shared with other",
            "  jobs: indicative only).",
            "",
            f"Rate mode ran on {ran} of {len(rows)} models and was bit-identical to QCFS on {exact} of them.",
            "",
            *lines,
            "",
        ]
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=None, help="comma-separated torchvision names (default: the whole zoo)")
    ap.add_argument("--no-timm", action="store_true", help="skip the timm models even when timm is installed")
    ap.add_argument("--T", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "docs" / "zoo.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    cases = [(n, "torchvision", s) for n, s in TORCHVISION.items()]
    if args.models:
        cases = [(n, "torchvision", TORCHVISION.get(n, 32)) for n in args.models.split(",")]
    elif not args.no_timm:
        try:
            import timm  # noqa: F401

            cases += [(n, "timm", s) for n, s in TIMM.items()]
        except ImportError:
            print("timm is not installed: its models are skipped")
    t0, rows = time.perf_counter(), []
    for name, source, side in cases:
        row = check_model(name, build(name, source), side=side, T=args.T, source=source)
        rows.append(row)
        print(" | ".join(_cell(row)), flush=True)
    cmd = "python benchmarks/zoo.py " + " ".join(sys.argv[1:] if argv is None else argv)
    Path(args.out).write_text(page(rows, args.T, cmd.strip(), time.perf_counter() - t0))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
