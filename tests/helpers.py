"""The one test-helper module: tiny networks, data and conversions shared by the tests (fast on 2 CPU cores).

- ``TinyResNet`` / ``tiny_model`` / ``tiny_data`` / ``tiny_da``: 3×8×8 inputs, ``F.relu`` and an in-place ``+=``
  residual; the Stage 1 / Stage 2 / convert tests.
- ``GrayResNet`` / ``tiny_resnet`` / ``fanout_net`` / ``batches`` / ``convert``: 1×8×8 inputs, an ``nn.ReLU``
  module and ``F.relu(out + x)``; the report / plot / io / cli / docs tests (a model spec ``helpers:tiny_resnet``
  names it on the command line).
"""

from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F
from torch import nn

import fxsnn


class TinyResNet(nn.Module):
    """conv-bn-relu, a residual block with F.relu and ``+=``, global average pooling, linear (8x8 inputs)."""

    def __init__(self, c: int = 6, classes: int = 3, pool: str = "avg"):
        super().__init__()
        self.conv1 = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.pool = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
        self.linear = nn.Linear(c, classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        res = self.bn2(self.conv2(out))
        res += out
        out = self.pool(F.relu(res))
        return self.linear(out.mean(dim=(2, 3)))


def tiny_model(seed: int = 0, dtype=torch.float32, **kw) -> TinyResNet:
    torch.manual_seed(seed)
    m = TinyResNet(**kw).to(dtype)
    with torch.no_grad():  # non-trivial BN statistics and affine terms
        for bn in (m.bn1, m.bn2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.7, 1.3)
            bn.bias.uniform_(-0.1, 0.3)
    return m.eval()


def tiny_data(n: int = 96, batch: int = 16, seed: int = 1, dtype=torch.float32, targets: bool = True) -> list:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (n,), generator=g)
    return [(x[i : i + batch], y[i : i + batch]) if targets else (x[i : i + batch],) for i in range(0, n, batch)]


def da_network(model: nn.Module, data, *, T: int = 4) -> torch.fx.GraphModule:
    """Recorders → calibrate → DA-QCFS(levels=T) → DA error calibration (Algorithm 1, stages I-II)."""
    return fxsnn.front_end(model, data, levels=T, progress=False)


@functools.cache
def _cached_da(T: int, dtype: torch.dtype, pool: str) -> torch.fx.GraphModule:
    return da_network(tiny_model(dtype=dtype, pool=pool), tiny_data(dtype=dtype), T=T)


def tiny_da(T: int = 4, dtype=torch.float32, pool: str = "avg") -> torch.fx.GraphModule:
    """A fresh copy of the DA-QCFS network of ``tiny_model(...)`` calibrated on ``tiny_data(...)`` (built once)."""
    return copy.deepcopy(_cached_da(T, dtype, pool))


def state(module: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed_keys(before: dict, after: dict) -> set:
    assert before.keys() == after.keys()
    return {k for k in before if not torch.equal(before[k], after[k])}


def nan_loss_at(monkeypatch, call: int) -> None:
    """Make the fine-tuning loop's ``call``-th training loss (1-based) NaN, with finite data and network.

    Non-finite *inputs* are refused by every data step before the loss (``fxsnn.DataError``), so the loss-side
    check is exercised by patching the loss the loop computes.
    """
    import types

    from fxsnn.calibration import finetune

    calls = [0]

    def cross_entropy(logits, y, *args, **kwargs):
        calls[0] += 1
        loss = F.cross_entropy(logits, y, *args, **kwargs)
        return loss * float("nan") if calls[0] == call else loss

    monkeypatch.setattr(finetune, "F", types.SimpleNamespace(cross_entropy=cross_entropy))


class GrayResNet(nn.Module):
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


def tiny_resnet(seed: int = 0) -> GrayResNet:
    """A GrayResNet with BN statistics fitted on random inputs (so activations are neither dead nor huge), in eval mode."""
    torch.manual_seed(seed)
    m = GrayResNet()
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


class GeluNet(nn.Module):
    """1×8×8 inputs: conv-bn-ReLU (the one site), then a GELU and a sigmoid gate that stay analog (a hybrid)."""

    def __init__(self, c: int = 4, classes: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.act = nn.GELU()
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        g = self.act(self.conv2(h))
        return self.fc((g * torch.sigmoid(g)).mean(dim=(2, 3)))


def gelu_net(seed: int = 0) -> GeluNet:
    torch.manual_seed(seed)
    return GeluNet().eval()


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """``fxsnn.cli.main(argv)`` (every item made a string) and what it printed: ``(exit code, stdout, stderr)``."""
    from fxsnn import cli

    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def dead_recorder() -> torch.fx.GraphModule:
    """A 1→2-channel conv + ReLU whose recorder is calibrated on data that never activates a channel (weights and
    bias −1, inputs in [0, 1)): every pre-activation ≤ 0, so the recorder falls back to θ = 1 with a warning."""
    rec = fxsnn.passes.insert_recorders(fxsnn.trace(nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU())))
    with torch.no_grad():
        rec.get_submodule("0").weight.fill_(-1.0)
        rec.get_submodule("0").bias.fill_(-1.0)
    return fxsnn.calibrate(rec, [torch.rand(2, 1, 3, 3)], progress=False)
