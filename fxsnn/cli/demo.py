"""The embedded default: a real conversion with nothing to download.

Trains a small Conv-BN-ReLU network for a few seconds on the 8×8 handwritten
digits that scikit-learn ships (1,797 images), converts it with plain parallel
conversion (FS-PC) and with fxsnn's full calibration, and prints ANN and SNN
test accuracy per T, the per-stage conversion time and the converted sites.

Run it with ``fxsnn demo`` or ``python -m fxsnn.cli.demo``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch import nn

__all__ = ["DigitsNet", "load_digits", "train_ann", "run", "main"]


class DigitsNet(nn.Module):
    """Conv-BN-ReLU ×3 with average pooling and a linear head, for ``[B, 1, 8, 8]`` digits."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.avg_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(torch.flatten(x, 1))


@dataclass(frozen=True)
class Digits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def loader(
        self, split: str, batch_size: int, *, shuffle: bool = False, seed: int = 0
    ) -> torch.utils.data.DataLoader:
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        gen = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=gen
        )


def load_digits(*, test_fraction: float = 0.25, seed: int = 0) -> Digits:
    """scikit-learn's digits as normalised ``[N, 1, 8, 8]`` tensors, split by a fixed permutation."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("the demo needs scikit-learn for its embedded digits: pip install 'fxsnn[demo]'") from exc
    d = sk_load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - x.mean()) / x.std()
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(y) * test_fraction)
    test, train = perm[:n_test], perm[n_test:]
    return Digits(x[train], y[train], x[test], y[test])


def train_ann(data: Digits, *, epochs: int = 8, seed: int = 0) -> DigitsNet:
    """Train :class:`DigitsNet` with Adam (a few seconds on a laptop CPU)."""
    torch.manual_seed(seed)
    model = DigitsNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=epochs * len(data.loader("train", 64)))
    model.train()
    for epoch in range(epochs):
        for x, y in data.loader("train", 64, shuffle=True, seed=seed + epoch):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
    return model.eval()


def run(
    *,
    time_steps: Sequence[int] = (1, 2, 4, 8),
    methods: Sequence[str] = ("fspc", "full"),
    epochs: int = 8,
    seed: int = 0,
    progress: bool = False,
    out: Callable[[str], object] = print,
) -> dict:
    """Train, convert with each method at each T, print the comparison; return ``{(method, T): top-1}``."""
    from ..conversion import convert
    from ..report.evaluation import evaluate
    from ..report.summarize import summary

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    data = load_digits(seed=seed)
    ann = train_ann(data, epochs=epochs, seed=seed)
    out(f"trained DigitsNet on {len(data.y_train)} digits in {time.perf_counter() - t0:.1f} s")
    test = data.loader("test", 256)
    calib = data.loader("train", 64, shuffle=True, seed=seed)
    ann_acc = evaluate(ann, test, progress=False).top1
    results: dict = {}
    timing: dict = {}
    last = None
    for T in time_steps:
        for method in methods:
            t = time.perf_counter()
            snn = convert(ann, calib, T=T, method=method, seed=seed, progress=progress)
            timing[(method, T)] = time.perf_counter() - t
            results[(method, T)] = evaluate(snn, test, progress=False).top1
            last = snn
    headers = ["T", "ANN"] + [f"{m} (SNN)" for m in methods] + [f"{m} time" for m in methods]
    rows = [
        [T, f"{100 * ann_acc:.2f} %"]
        + [f"{100 * results[(m, T)]:.2f} %" for m in methods]
        + [f"{timing[(m, T)]:.1f} s" for m in methods]
        for T in time_steps
    ]
    out(f"\nANN vs parallel SNN, top-1 on {len(data.y_test)} held-out digits")
    out(tabulate(rows, headers=headers, tablefmt="github"))
    if last is not None:
        out(f"\nconverted sites of the last network ({methods[-1]}, T={time_steps[-1]}):")
        out(str(summary(last)))
    results["ann"] = ann_acc
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fxsnn demo", description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, nargs="+", default=[1, 2, 4, 8], help="time steps to convert for")
    parser.add_argument("--methods", nargs="+", default=["fspc", "full"], help="conversion methods to compare")
    parser.add_argument("--epochs", type=int, default=8, help="ANN training epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run(time_steps=tuple(args.T), methods=tuple(args.methods), epochs=args.epochs, seed=args.seed, progress=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
