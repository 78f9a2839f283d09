import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RESNET20 = SHARED_DATA / "models" / "resnet20-12fca82f.th"

torch.set_num_threads(min(2, os.cpu_count() or 1))
warnings.filterwarnings("ignore", message=".*no channel ever activated.*")

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load_cifar(name: str, n: int | None = None, seed: int = 0):
    """Normalised CIFAR-10 images from ../shared/data through a fixed random permutation (files are sorted by class)."""
    d = np.load(SHARED_DATA / "cifar10" / f"{name}.npz")
    idx = np.random.RandomState(seed).permutation(len(d["y"]))[:n]
    x = torch.from_numpy(d["x"][idx]).permute(0, 3, 1, 2).float().div_(255)
    return (x - MEAN) / STD, torch.from_numpy(d["y"][idx]).long()


needs_shared_data = pytest.mark.skipif(not RESNET20.exists(), reason="../shared/data (CIFAR-10 + ResNet-20) is absent")
