"""The shared CIFAR-10 files and ResNet-20 weights in ../shared/data, loaded one way for benchmarks and tests.

The files hold ``x`` ``[N, 32, 32, 3]`` uint8 and ``y`` ``[N]`` labels, sorted by class; the published
checkpoints expect pixels in [0, 1] normalised with the ImageNet statistics below (../shared/data/README.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

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
