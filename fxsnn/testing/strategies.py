"""Hypothesis strategies: random small CNNs, inputs, time steps, thresholds, neuron cases."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

__all__ = [
    "RELU_SPELLINGS",
    "RandomCNN",
    "small_cnns",
    "random_cnn",
    "time_steps",
    "thresholds",
    "inputs_for",
    "NeuronCase",
    "neuron_cases",
]

#: Every ReLU spelling fxsnn normalises (``shared`` = one nn.ReLU instance called from several sites).
RELU_SPELLINGS = (
    "module",
    "module_inplace",
    "shared",
    "F.relu",
    "F.relu_inplace",
    "torch.relu",
    "torch.relu_",
    "F.relu_",
    "method",
    "method_",
)


def time_steps(max_T: int = 64) -> st.SearchStrategy[int]:
    """T in ``1..max_T``."""
    return st.integers(min_value=1, max_value=max_T)


def thresholds(min_value: float = 1e-2, max_value: float = 50.0) -> st.SearchStrategy[float]:
    """A positive threshold θ."""
    return st.floats(min_value=min_value, max_value=max_value, allow_nan=False, allow_infinity=False)


# -- random small CNNs -----------------------------------------------------------
@dataclass(frozen=True)
class _Block:
    kind: str  # conv | res | cat | avgpool | maxpool | fork
    relus: tuple[str, ...]
    bn: bool
    out: int


class RandomCNN(nn.Module):
    """A small traceable CNN built from a spec, mixing every ReLU spelling.

    Blocks: ``conv`` (conv[+bn]→relu), ``res`` (two convs, residual add, relu),
    ``cat`` (two conv→relu branches concatenated), ``avgpool``, ``maxpool``
    (right after a relu), ``fork`` (an in-place ReLU whose input is read again
    afterwards: ``y = bn(conv(x)); r = relu_(y); out = r + y``). Head: flatten →
    linear[+bn]→relu → linear. Input ``[B, in_channels, size, size]``.
    """

    def __init__(
        self, blocks: tuple[_Block, ...], *, in_channels: int, size: int, hidden: int, head_relu: str, num_classes: int
    ):
        super().__init__()
        self.spec = blocks
        self.in_channels, self.size = in_channels, size
        self.shared_relu = nn.ReLU()
        self.layers = nn.ModuleList()
        self.relu_modules = nn.ModuleDict()
        c, s = in_channels, size
        for i, b in enumerate(blocks):
            layer, c, s = self._block(b, c, s)
            for j, spelling in enumerate(b.relus):
                if spelling in ("module", "module_inplace"):
                    self.relu_modules[f"b{i}_{j}"] = nn.ReLU(inplace=spelling == "module_inplace")
            self.layers.append(layer)
        self.flat = c * s * s
        self.fc1 = nn.Linear(self.flat, hidden)
        self.fc_bn = nn.BatchNorm1d(hidden)
        self.head_relu = head_relu
        if head_relu in ("module", "module_inplace"):
            self.relu_modules["head"] = nn.ReLU(inplace=head_relu == "module_inplace")
        self.fc2 = nn.Linear(hidden, num_classes)

    @staticmethod
    def _block(b: _Block, c: int, s: int) -> tuple[nn.ModuleDict, int, int]:
        """The layers of one block for ``c`` input channels at size ``s``; returns them with the output's ``c, s``."""
        layer = nn.ModuleDict()
        if b.kind in ("conv", "fork"):
            layer["conv"] = nn.Conv2d(c, b.out, 3, padding=1, bias=not b.bn)
            if b.bn:
                layer["bn"] = nn.BatchNorm2d(b.out)
            c = b.out
        elif b.kind == "res":
            layer["conv1"] = nn.Conv2d(c, c, 3, padding=1, bias=not b.bn)
            layer["conv2"] = nn.Conv2d(c, c, 3, padding=1, bias=not b.bn)
            if b.bn:
                layer["bn1"], layer["bn2"] = nn.BatchNorm2d(c), nn.BatchNorm2d(c)
        elif b.kind == "cat":
            half = max(1, b.out // 2)
            layer["conv_a"] = nn.Conv2d(c, half, 3, padding=1)
            layer["conv_b"] = nn.Conv2d(c, b.out - half if b.out > half else 1, 1)
            c = half + (b.out - half if b.out > half else 1)
        elif b.kind in ("avgpool", "maxpool"):
            s = s // 2
        return layer, c, s

    def _relu(self, x, spelling: str, key: str):
        if spelling in ("module", "module_inplace"):
            return self.relu_modules[key](x)
        if spelling == "shared":
            return self.shared_relu(x)
        if spelling == "F.relu":
            return F.relu(x)
        if spelling == "F.relu_inplace":
            return F.relu(x, inplace=True)
        if spelling == "torch.relu":
            return torch.relu(x)
        if spelling == "torch.relu_":
            return torch.relu_(x)
        if spelling == "F.relu_":
            return F.relu_(x)
        if spelling == "method":
            return x.relu()
        if spelling == "method_":
            return x.relu_()
        raise ValueError(spelling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (b, layer) in enumerate(zip(self.spec, self.layers)):
            r = lambda t, j, b=b, i=i: self._relu(t, b.relus[j], f"b{i}_{j}")  # noqa: E731
            if b.kind == "conv":
                y = layer["conv"](x)
                x = r(layer["bn"](y) if b.bn else y, 0)
            elif b.kind == "fork":
                y = layer["conv"](x)
                y = layer["bn"](y) if b.bn else y
                x = r(y, 0) + y  # an in-place spelling changes y too
            elif b.kind == "res":
                y = layer["conv1"](x)
                y = r(layer["bn1"](y) if b.bn else y, 0)
                y = layer["conv2"](y)
                y = layer["bn2"](y) if b.bn else y
                y = y + x
                x = r(y, 1)
            elif b.kind == "cat":
                x = torch.cat([r(layer["conv_a"](x), 0), r(layer["conv_b"](x), 1)], dim=1)
            elif b.kind == "avgpool":
                x = F.avg_pool2d(x, 2)
            elif b.kind == "maxpool":
                x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)
        x = self._relu(self.fc_bn(self.fc1(x)), self.head_relu, "head")
        return self.fc2(x)


def _randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=gen) * 0.3 + 0.2)


def _build_cnn(
    integers, sample, booleans, *, max_blocks: int, maxpool: bool, in_channels: int, size: int, num_classes: int
) -> RandomCNN:
    """Build a random CNN from three choice functions (Hypothesis draws or a ``random.Random``)."""
    kinds = ["conv", "res", "cat", "avgpool", "fork"] + (["maxpool"] if maxpool else [])
    n = integers(1, max_blocks)
    blocks, s, after_relu = [], size, False
    for _ in range(n):
        kind = sample(kinds)
        if kind in ("avgpool", "maxpool") and s < 2:
            kind = "conv"
        if kind == "maxpool" and not after_relu:
            kind = "conv"
        if kind in ("avgpool", "maxpool"):
            s //= 2
        n_relu = {"conv": 1, "fork": 1, "res": 2, "cat": 2}.get(kind, 0)
        blocks.append(_Block(kind, tuple(sample(RELU_SPELLINGS) for _ in range(n_relu)), booleans(), integers(2, 6)))
        after_relu = kind in ("conv", "res", "cat", "maxpool")
    seed = integers(0, 2**31 - 1)
    torch.manual_seed(seed)
    model = RandomCNN(
        tuple(blocks),
        in_channels=in_channels,
        size=size,
        hidden=integers(3, 8),
        head_relu=sample(RELU_SPELLINGS),
        num_classes=num_classes,
    )
    with torch.no_grad():
        _randomise_bn(model, torch.Generator().manual_seed(seed))
    return model.eval()


@st.composite
def small_cnns(
    draw: st.DrawFn,
    *,
    max_blocks: int = 4,
    maxpool: bool = False,
    in_channels: int = 3,
    size: int = 8,
    num_classes: int = 5,
) -> RandomCNN:
    """A random :class:`RandomCNN` in eval mode with seeded random weights and BN statistics.

    ``maxpool=True`` also draws MaxPool blocks (each placed right after a ReLU).
    """
    return _build_cnn(
        lambda lo, hi: draw(st.integers(lo, hi)),
        lambda xs: draw(st.sampled_from(xs)),
        lambda: draw(st.booleans()),
        max_blocks=max_blocks,
        maxpool=maxpool,
        in_channels=in_channels,
        size=size,
        num_classes=num_classes,
    )


def random_cnn(
    seed: int, *, max_blocks: int = 4, maxpool: bool = False, in_channels: int = 3, size: int = 8, num_classes: int = 5
) -> RandomCNN:
    """The same family as :func:`small_cnns`, drawn from ``random.Random(seed)`` (for sweeps and benchmarks)."""
    rng = random.Random(seed)
    return _build_cnn(
        rng.randint,
        rng.choice,
        lambda: rng.random() < 0.5,
        max_blocks=max_blocks,
        maxpool=maxpool,
        in_channels=in_channels,
        size=size,
        num_classes=num_classes,
    )


def inputs_for(model: RandomCNN, *, batch: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A deterministic standard-normal input batch ``[batch, in_channels, size, size]`` for a :class:`RandomCNN`."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, model.in_channels, model.size, model.size, generator=gen, dtype=dtype)


# -- single-neuron cases --------------------------------------------------------------
@dataclass(frozen=True)
class NeuronCase:
    """Inputs for one channel-wise neuron check: ``x [B, C]``, per-channel ``theta``, ``psi_da``, ``delta_b``."""

    x: torch.Tensor
    theta: torch.Tensor
    T: int
    psi_da: torch.Tensor | None
    delta_b: torch.Tensor


@st.composite
def neuron_cases(
    draw: st.DrawFn,
    *,
    dtype: torch.dtype = torch.float32,
    da: bool | None = None,
    delta_b: str = "zero",
    max_T: int = 64,
) -> NeuronCase:
    """Inputs for the neuron properties, with exact bin edges, negatives and large values.

    ``delta_b``: ``"zero"``, ``"positive_margin"`` (θ − Δb > 0) or ``"any"``
    (θ − Δb may be ≤ 0, including exactly 0).
    """
    T = draw(time_steps(max_T))
    C = draw(st.integers(1, 3))
    theta = [draw(thresholds()) for _ in range(C)]
    use_da = draw(st.booleans()) if da is None else da
    psi_da = [draw(st.floats(-2.0, 2.0, allow_nan=False)) for _ in range(C)] if use_da else None
    if delta_b == "zero":
        db = [0.0] * C
    elif delta_b == "positive_margin":
        db = [draw(st.floats(-th, 0.999 * th, allow_nan=False)) for th in theta]
    else:
        db = [draw(st.one_of(st.just(th), st.floats(-th, 3 * th, allow_nan=False))) for th in theta]
    th_t = torch.tensor(theta, dtype=dtype)
    db_t = torch.tensor(db, dtype=dtype)
    values = []
    B = draw(st.integers(1, 6))
    for _ in range(B):
        row = []
        for c in range(C):
            kind = draw(st.sampled_from(["edge", "edge", "uniform", "negative", "large"]))
            if kind == "edge":
                # x such that (x + ψ_DA)·T + θ/2 = m·(θ − Δb) exactly in real numbers
                m = draw(st.integers(-1, T + 1))
                eff = float(th_t[c] - db_t[c])
                v = (m * eff - float(th_t[c]) * 0.5) / T - (psi_da[c] if psi_da else 0.0)
            elif kind == "uniform":
                v = draw(st.floats(0.0, 1.2 * theta[c], allow_nan=False))
            elif kind == "negative":
                v = draw(st.floats(-1e3, 0.0, allow_nan=False))
            else:
                v = draw(st.floats(theta[c], 1e6, allow_nan=False))
            row.append(v)
        values.append(row)
    x = torch.tensor(values, dtype=dtype)
    return NeuronCase(x, th_t, T, None if psi_da is None else torch.tensor(psi_da, dtype=dtype), db_t)
