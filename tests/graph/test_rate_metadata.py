"""Rate mode on shapes and resampling (issue 10, item 1): sizes are not time-varying, upsampling is linear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

import fxsnn
from fxsnn.errors import ModeError
from fxsnn.graph.rate import rate_mode_blockers, returns_metadata


class ShuffleUp(nn.Module):
    """conv-bn-ReLU, channel shuffle spelled with x.size() / floordiv / asserts, nn.Upsample, F.interpolate."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x)))
        b, c, height, width = h.size()
        torch._assert(h.dim() == 4, "NCHW")
        torch._assert(c % 2 == 0, "even channels")
        g = c // 2
        h = h.view(b, 2, g, height, width).transpose(1, 2).contiguous().view(b, -1, height, width)
        h = self.up(F.relu(self.conv2(h)))
        h = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=False) + h.shape[1] * 0.0
        return self.fc(F.adaptive_avg_pool2d(F.relu(h), 1).flatten(1))


def _qcfs_and_snn(model: nn.Module, x: torch.Tensor, T: int = 4):
    gm = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(model.eval())), [x], progress=False)
    qcfs = fxsnn.passes.to_qcfs(gm, levels=T)
    return qcfs, fxsnn.passes.lower_to_paraif(qcfs, T=T, mode="spike")


def test_channel_shuffle_and_upsampling_run_in_rate_mode_bit_identical_to_qcfs():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    qcfs, snn = _qcfs_and_snn(ShuffleUp(), x)
    assert rate_mode_blockers(snn) == []
    with torch.no_grad():
        spike = snn(x)
        fxsnn.set_mode(snn, "rate")
        rate = snn(x)
        assert torch.equal(rate, qcfs(x))
    assert torch.allclose(spike, rate, atol=1e-5)


def test_shufflenet_v2_runs_in_rate_mode_bit_identical_to_qcfs():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    qcfs, snn = _qcfs_and_snn(torchvision.models.shufflenet_v2_x0_5(num_classes=5), x, T=2)
    assert rate_mode_blockers(snn) == []
    fxsnn.set_mode(snn, "rate")
    with torch.no_grad():
        assert torch.equal(snn(x), qcfs(x))


def test_metadata_is_decided_by_value_type_where_shape_prop_ran():
    gm = fxsnn.trace(ShuffleUp().eval())
    static = {n.name for n in gm.graph.nodes if returns_metadata(n)}
    assert {"size", "dim", "getattr_1"} <= static  # h.size(), h.dim(), h.shape
    ShapeProp(gm).propagate(torch.randn(2, 3, 8, 8))
    typed = {n.name for n in gm.graph.nodes if returns_metadata(n)}
    assert static <= typed and {"floordiv", "eq", "_assert"} <= typed  # ints, bools and None are not tensors

    class Split(nn.Module):
        def forward(self, x):
            a, b = torch.chunk(x, 2, dim=1)  # a tuple of tensors, not metadata
            return a * x.sum().item() + b

    split = fxsnn.trace(Split())
    ShapeProp(split).propagate(torch.randn(2, 4))
    assert not any(returns_metadata(n) for n in split.graph.nodes)  # chunk (tuple) and item (float) are data


def test_a_genuinely_non_affine_op_still_blocks_rate_mode_naming_the_node():
    class Square(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            h = F.relu(self.conv(x))
            h = h * h.size(1)  # scaling by a size: affine
            return self.fc((h * h).mean((2, 3)))  # a product of two time-varying factors: not affine

    x = torch.randn(2, 3, 6, 6)
    _, snn = _qcfs_and_snn(Square(), x)
    assert [n.name for n, _ in rate_mode_blockers(snn)] == ["mul_1"]
    with pytest.raises(ModeError, match="mul_1"):
        fxsnn.set_mode(snn, "rate")
