"""CIFAR ResNets (He et al., 2016, option-A shortcuts) written like the published model code.

State-dict names match akamaster/pytorch_resnet_cifar10's checkpoints. As in that
code, ReLUs are ``F.relu`` calls and the residual sum is an in-place ``out +=``:
what real model code looks like, and what fxsnn must convert.
"""

from __future__ import annotations

import numbers
import os

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["cifar_resnet", "BasicBlock", "CifarResNet", "load_checkpoint"]


class _ShortcutA(nn.Module):
    """Option A: take every second pixel and zero-pad the channels by ``planes // 4`` on each side."""

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _ShortcutA(planes) if stride != 1 or in_planes != planes else nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        out = F.relu(out)
        return out


class CifarResNet(nn.Module):
    def __init__(self, num_blocks: list[int], num_classes: int = 10):
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, num_blocks[0], 1)
        self.layer2 = self._make_layer(32, num_blocks[1], 2)
        self.layer3 = self._make_layer(64, num_blocks[2], 2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        return self.linear(out)


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a published checkpoint (``{"state_dict": {"module.…": …}}`` or a plain state dict) into ``model``."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"the weights in {os.fspath(path)!r} do not match {type(model).__name__}: {exc}") from None
    return model


def cifar_resnet(depth: int = 20, *, num_classes: int = 10, weights: str | os.PathLike | None = None) -> CifarResNet:
    """ResNet-``depth`` for 32×32 images (He et al., 2016, Sec. 4.2): ``depth = 6n + 2`` for a whole ``n ≥ 1``
    (20, 32, 44, 56, 110, 1202 in the published checkpoints), three stages of ``n`` basic blocks.

    ``weights``: a checkpoint path (e.g. ``resnet20-12fca82f.th``) to load.
    """
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"cifar_resnet: depth must be 6n + 2 for a whole n >= 1 (20, 32, 44, 56, 110, 1202); got {depth!r}"
        )
    n = (int(depth) - 2) // 6
    model = CifarResNet([n, n, n], num_classes=num_classes)
    if weights is not None:
        load_checkpoint(model, weights)
    return model
