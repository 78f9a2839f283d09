"""Tiny models and their converted SNNs for the report / plot / io / cli / docs tests (importable, so they pickle)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import fxsnn


class TinyResNet(nn.Module):
    """conv-bn-ReLU, a residual block ending in F.relu(out + x), avg-pool, linear: 1×8×8 → 3 classes."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(x))
        out = F.relu(out + x)
        out = F.avg_pool2d(out, 2)
        return self.fc(out.flatten(1))


def tiny_resnet(seed: int = 0) -> TinyResNet:
    """A TinyResNet with BN statistics fitted on random inputs (so activations are neither dead nor huge), in eval mode."""
    torch.manual_seed(seed)
    m = TinyResNet()
    m.train()
    with torch.no_grad():
        for _ in range(5):
            m(torch.randn(32, 1, 8, 8))
    return m.eval()


def fanout_net(seed: int = 0) -> nn.Sequential:
    """conv3x3 → ReLU → conv1x1 → ReLU → flatten → linear: every spike of the two sites has a fixed fan-out (5, then 3)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 5, 1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(5 * 8 * 8, 3),
    ).eval()


def batches(n: int = 3, batch: int = 8, seed: int = 1, classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, 1, 8, 8, generator=g), torch.randint(0, classes, (batch,), generator=g)) for _ in range(n)
    ]


def convert(model: nn.Module, data, *, T: int = 4, da: bool = True, mode: str = "spike"):
    """The data-free front end + lowering (no Stage 1/2): recorders → (DA-)QCFS → ParallelIF."""
    gm = fxsnn.front_end(model, data, levels=T, da=da, progress=False)
    return fxsnn.passes.lower_to_paraif(gm, T=T, mode=mode)
