"""The paper's Table 1 path: ResNet-20 fine-tuned with QCFS activations, then converted with its own θ and L.

1. **QCFS backbone.** The shared ResNet-20 (``../shared/data``) gets a QCFS activation (Eq. 2,
   :class:`fxsnn.nn.QCFS`, ``levels = L``) at every ReLU, θ per channel initialised at the ``--init-percentile``
   -th percentile of the ANN's pre-activations on train_10k (``fxsnn.passes.insert_recorders`` +
   ``fxsnn.calibrate`` + ``fxsnn.passes.to_qcfs``). All weights, BN and θ are then fine-tuned on train_10k:
   SGD (momentum 0.9, Nesterov), cosine learning rate from ``--lr`` to 0 over ``--epochs`` epochs, weight decay
   5e-4 on the weights (none on θ and BN), batch 128, random horizontal flips, BN in train mode, cross-entropy;
   the floor is straight-through, so θ learns too.
2. **Conversion.** The fine-tuned network is a QCFS-trained backbone: ``fxsnn.convert`` reads θ and L from it
   (no recorders) and converts it with ``fspc`` (direct lowering), ``fspc_da`` (DA-QCFS at T calibrated against
   the backbone's QCFS, Algorithm 1) and ``full`` (the same + Stages 1 and 2, fxsnn's defaults), at each ``--T``.
3. Top-1 on all 10,000 images of ``test.npz`` (rate mode, whose spike counts are spike mode's), written into
   docs/results.md between ``<!-- qcfs-backbone:start -->`` and ``<!-- qcfs-backbone:end -->``.

    python benchmarks/qcfs_backbone.py            # 15 min with --threads 1 beside other work (2026-12-02)
    python benchmarks/qcfs_backbone.py --quick --out /tmp/r.md   # seconds: tiny data (random if ../shared is absent)
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import fxsnn
from fxsnn.nn import QCFS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from doc_sections import replace_section  # noqa: E402
from shared_data import RESNET20 as WEIGHTS  # noqa: E402
from shared_data import SHARED, cifar  # noqa: E402

START, END = "<!-- qcfs-backbone:start -->", "<!-- qcfs-backbone:end -->"
METHODS = ("fspc", "fspc_da", "full")


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--T", type=int, nargs="+", default=[2, 4])
    p.add_argument("--levels", type=int, default=4, help="L of the QCFS activations (default 4)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--init-percentile", type=float, default=99.9)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny data and one short epoch: a smoke run")
    p.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    p.add_argument("--no-write", action="store_true")
    return p.parse_args(argv)


def _data(quick: bool):
    """``(train, test, model, source)``: the shared files and weights; with ``--quick`` 128 / 256 images of them,
    or random images and a randomly initialised ResNet-20 when ../shared/data is absent."""
    shared = WEIGHTS.exists() and (SHARED / "cifar10" / "test.npz").exists()
    if not shared and not quick:
        return None
    if shared:
        train = TensorDataset(*cifar("train_10k", n=128 if quick else None, seed=0 if quick else None))
        test = TensorDataset(*cifar("test", n=256 if quick else None, seed=0 if quick else None))
        return train, test, fxsnn.models.cifar_resnet(20, weights=WEIGHTS).eval(), "shared"
    g = torch.Generator().manual_seed(0)
    make = lambda n: TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))  # noqa: E731
    return make(128), make(256), fxsnn.models.cifar_resnet(20).eval(), "random"


def qcfs_init(model, cal, levels: int, percentile: float):
    """The QCFS network: every ReLU a QCFS with ``levels``, θ per channel at ``percentile`` of the ANN's input."""
    gm = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(model), percentile=percentile), cal, progress=False)
    return fxsnn.passes.to_qcfs(gm, levels=levels)


def finetune(net, train: TensorDataset, epochs: int, lr: float, seed: int) -> list[float]:
    """Fine-tune every weight of ``net`` (θ included) in place; returns the mean training loss per epoch."""
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(train, batch_size=128, shuffle=True, generator=g)
    thetas = [m.theta for m in net.modules() if isinstance(m, QCFS)]
    ids = {id(p) for p in thetas}
    decay = [p for n, p in net.named_parameters() if id(p) not in ids and p.dim() > 1]
    rest = [p for p in net.parameters() if id(p) not in ids and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": 5e-4}, {"params": rest + thetas, "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    steps = max(1, epochs * len(loader))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    losses = []
    net.train()
    for _ in range(epochs):
        total, n = 0.0, 0
        for x, y in loader:
            flip = torch.rand(x.shape[0], generator=g) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + float(loss.detach()) * len(y), n + len(y)
        losses.append(total / n)
    with torch.no_grad():  # a θ that training pushed to ≤ 0 would be no threshold: keep it positive
        for t in thetas:
            t.clamp_(min=1e-3)
    return losses


def _evaluate(net, test_dl) -> float:
    if fxsnn.modes.neurons(net):
        fxsnn.set_mode(net, "rate")
    return fxsnn.evaluate(net, test_dl, progress=False).top1


def run(args) -> dict | None:
    loaded = _data(args.quick)
    if loaded is None:
        return None
    train, test, model, source = loaded
    cal = DataLoader(train, batch_size=64 if args.quick else 128, shuffle=True)
    test_dl = DataLoader(test, batch_size=1000)
    epochs = 1 if args.quick else args.epochs
    res = {"source": source, "n_train": len(train), "n_test": len(test), "epochs": epochs, "rows": {}}
    res["ann"] = _evaluate(model, test_dl)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        backbone = qcfs_init(model, cal, args.levels, args.init_percentile)
        res["qcfs_init"] = _evaluate(backbone, test_dl)
        res["losses"] = finetune(backbone, train, epochs, args.lr, args.seed)
    backbone.eval()
    res["finetune_s"] = time.perf_counter() - t0
    res["qcfs"] = _evaluate(backbone, test_dl)
    print(f"ANN {100 * res['ann']:.2f} %, QCFS init {100 * res['qcfs_init']:.2f} %, fine-tuned QCFS (L="
          f"{args.levels}) {100 * res['qcfs']:.2f} % in {res['finetune_s']:.0f} s", flush=True)  # fmt: skip
    config = fxsnn.ConvertConfig().override("stage1.epochs=1", "stage2.epochs=1") if args.quick else None
    for method, T in [(m, T) for m in METHODS for T in args.T]:  # cheap methods first; each convert is seeded
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*quantised with levels=")  # fspc at T != L: expected
            snn = fxsnn.convert(backbone, cal, T=T, method=method, config=config, seed=args.seed, progress=False)
        secs = time.perf_counter() - t0
        assert snn.meta["fxsnn.convert"]["skipped"].get("recorders"), "θ must come from the backbone"
        res["rows"][(method, T)] = (_evaluate(snn, test_dl), secs)
        print(f"T={T} {method:8s} top-1 {100 * res['rows'][(method, T)][0]:6.2f} %  {secs:6.1f} s", flush=True)
    return res


def render(command: str, res: dict, args, total_s: float) -> str:
    data = (
        "all 10,000 images of `train_10k.npz` (fine-tuning and calibration) and of `test.npz` (top-1)"
        if res["source"] == "shared" and not args.quick
        else f"{res['n_train']} / {res['n_test']} {res['source']} images (a smoke run: the numbers mean nothing)"
    )
    losses = " → ".join(f"{v:.3f}" for v in res["losses"]) or "not recorded"
    out = [
        START,
        "## QCFS-trained ResNet-20 (the paper's Table 1 path)",
        "",
        "Produced by",
        "",
        f"    {command}",
        "",
        f"({total_s / 60:.1f} min, `torch.set_num_threads({args.threads})`, on a shared machine) on {data}. "
        f"The backbone: every ReLU of the shared ResNet-20 a QCFS with L = {args.levels}, θ per channel "
        f"initialised at the {args.init_percentile:g}th percentile of the ANN's pre-activations, then all weights, "
        f"BN and θ fine-tuned for {res['epochs']} epoch(s) (SGD, Nesterov momentum 0.9, cosine lr from {args.lr:g} "
        f"to 0, weight decay 5e-4 on conv / linear weights, batch 128, random flips; training loss per epoch "
        f"{losses}; {res['finetune_s']:.0f} s). `fxsnn.convert` then reads θ and L from the backbone (no "
        "recorders; `fspc` lowers it directly, `fspc_da` / `full` calibrate DA-QCFS at T against it), "
        "with fxsnn's defaults otherwise. See `benchmarks/qcfs_backbone.py` for the recipe.",
        "",
        f"- ANN (ReLU, before fine-tuning): **{100 * res['ann']:.2f} %**; QCFS at initialisation: "
        f"{100 * res['qcfs_init']:.2f} %; fine-tuned QCFS ANN (L = {args.levels}): **{100 * res['qcfs']:.2f} %**",
        "",
        "| Backbone | QCFS ANN (%) | T | FS-PC | FS-PC† | Full | seconds (FS-PC / FS-PC† / Full) |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = res["rows"]
    for T in args.T:  # a conversion that did not run (an interrupted run) shows as "–"
        cells = [f"{100 * rows[(m, T)][0]:.2f}" if (m, T) in rows else "–" for m in METHODS]
        secs = " / ".join(f"{rows[(m, T)][1]:.0f}" if (m, T) in rows else "–" for m in METHODS)
        out.append(
            f"| ResNet-20, QCFS L={args.levels} | {100 * res['qcfs']:.2f} | {T} | " + " | ".join(cells) + f" | {secs} |"
        )
    out += ["", "Compare with the off-the-shelf ReLU backbone's rows in the ablation table above.", END]
    return "\n".join(out) + "\n"


def write_section(path: Path, section: str) -> None:
    """Put ``section`` between the markers of ``path`` (appended at its end when it has none)."""
    replace_section(path, section, START, END, append=True)


def main(argv=None) -> int:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    command = "python benchmarks/qcfs_backbone.py" + "".join(
        " " + shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    t0 = time.perf_counter()
    res = run(args)
    if res is None:
        print(f"skipped: {SHARED} (CIFAR-10 and the ResNet-20 weights) is absent; see its README (or use --quick)")
        return 0
    text = render(command, res, args, time.perf_counter() - t0)
    print(text)
    if not args.no_write:
        write_section(Path(args.out), text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
