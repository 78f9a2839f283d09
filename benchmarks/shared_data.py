"""The shared CIFAR-10 files and ResNet-20 weights in ../shared/data, loaded one way for benchmarks and tests.

The files hold ``x`` ``[N, 32, 32, 3]`` uint8 and ``y`` ``[N]`` labels, sorted by class; the published
checkpoints expect pixels in [0, 1] normalised with the ImageNet statistics below (../shared/data/README.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from fxsnn.models import cifar_resnet
from fxsnn.validation import parse_value

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RESNET20 = SHARED / "models" / "resnet20-12fca82f.th"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def cifar(name: str, n: int | None = None, seed: int | None = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images ``[n, 3, 32, 32]`` and labels ``[n]`` of ``cifar10/<name>.npz``.

    ``seed``: the first ``n`` images of ``numpy.random.RandomState(seed).permutation`` (the files are
    sorted by class, so a prefix of the file is a few classes only); ``None``: file order.
    """
    d = np.load(SHARED / "cifar10" / f"{name}.npz")
    idx = slice(n) if seed is None else np.random.RandomState(seed).permutation(len(d["y"]))[:n]
    x = torch.from_numpy(d["x"][idx]).permute(0, 3, 1, 2).float().div_(255)
    return (x - MEAN) / STD, torch.from_numpy(d["y"][idx]).long()


def held_out_split() -> tuple[DataLoader, list]:
    """The split that chooses defaults (never the test set): train_10k through a fixed permutation (the file is
    sorted by class) into a shuffled loader of 8,000 calibration images (batch 128) and 2,000 validation images
    (4 batches of 500)."""
    x, y = cifar("train_10k", seed=123)
    cal = DataLoader(TensorDataset(x[:8000], y[:8000]), batch_size=128, shuffle=True)
    val = [(x[i : i + 500], y[i : i + 500]) for i in range(8000, 10000, 500)]
    return cal, val


def parse_overrides(text: str, kind: type, *, where: str) -> dict:
    """``"lr=0.01 surrogate=ste"`` → ``{"lr": 0.01, "surrogate": "ste"}``: ``name=value`` items (values as Python
    literals, a bare word such as ``eval`` stays a string), checked against the config class ``kind`` so that
    unknown names and bad values fail before any work. ``where`` names the script in the error."""
    out = {}
    for item in text.split():
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{where}: item {item!r} is not name=value")
        out[name] = parse_value(value)
    kind().replace(**out)
    return out


def held_out_setup(threads: int):
    """``(model, cal, val)`` for the studies on the held-out split: the shared ResNet-20 in eval mode and
    :func:`held_out_split`, with ``torch.set_num_threads(threads)``; ``None`` (a "skipped" line printed) when
    ../shared/data is absent, so that the script can exit cleanly."""
    if not RESNET20.exists():
        print(f"skipped: {SHARED} (CIFAR-10 and the ResNet-20 weights) is absent")
        return None
    torch.set_num_threads(threads)
    cal, val = held_out_split()
    return cifar_resnet(20, weights=RESNET20).eval(), cal, val
