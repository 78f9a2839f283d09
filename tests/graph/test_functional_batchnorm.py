"""BatchNorm that torch.fx traces through (issue 10, item 2): timm's ``BatchNormAct2d`` calls ``F.batch_norm``
itself; fxsnn.trace makes it an ``nn.BatchNorm2d`` module sharing the traced copy's tensors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxsnn
from fxsnn.graph.rate import rate_mode_blockers
from fxsnn.graph.standardize import batch_norm_modules_


class BatchNormAct2d(nn.BatchNorm2d):
    """A stand-in for timm's ``BatchNormAct2d`` (timm 1.0): BN via ``F.batch_norm``, then ``drop``, then ``act``."""

    def __init__(self, c: int, act: bool = True):
        super().__init__(c)
        self.drop = nn.Identity()
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x):
        torch._assert(x.ndim == 4, f"expected 4D input (got {x.ndim}D input)")
        factor = 0.0 if self.momentum is None else self.momentum
        bn_training = True if self.training else (self.running_mean is None) and (self.running_var is None)
        x = F.batch_norm(
            x,
            self.running_mean if not self.training or self.track_running_stats else None,
            self.running_var if not self.training or self.track_running_stats else None,
            self.weight,
            self.bias,
            bn_training,
            factor,
            self.eps,
        )
        return self.act(self.drop(x))


class FrozenBN(nn.BatchNorm2d):
    """Always normalises with its running statistics (``training=False``), even in train mode: not a BN's forward."""

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.1, self.eps)


class Net(nn.Module):
    def __init__(self, c: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn1 = BatchNormAct2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = BatchNormAct2d(c, act=False)
        self.block = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), BatchNormAct2d(c))
        self.fc = nn.Linear(c, 3)

    def forward(self, x):
        h = self.bn1(self.conv1(x))
        h = F.relu(self.bn2(self.conv2(h)) + h)
        return self.fc(self.block(h).mean(dim=(2, 3)))


def _net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    m = Net()
    with torch.no_grad():
        for bn in (m.bn1, m.bn2, m.block[1]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.7, 1.3)
            bn.bias.uniform_(-0.1, 0.3)
    return m.eval()


def _data(n: int = 2, batch: int = 8):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(batch, 3, 6, 6, generator=g), torch.randint(0, 3, (batch,), generator=g)) for _ in range(n)]


def _snapshot(m: nn.Module) -> dict:
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_trace_turns_each_functional_batch_norm_into_a_batchnorm_module_with_the_copy_s_tensors():
    model = _net()
    before = _snapshot(model)
    gm = fxsnn.trace(model)
    assert not [n for n in gm.graph.nodes if n.op == "call_function" and n.target is F.batch_norm]
    bns = {name: m for name, m in gm.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert sorted(bns) == ["block.1", "bn1", "bn2"] and all(type(m) is nn.BatchNorm2d for m in bns.values())
    assert not any(m.training for m in bns.values())
    assert [n.name for n in gm.graph.nodes if n.op == "call_module" and n.target in bns] == ["bn1", "bn2", "block_1"]
    x = _data()[0][0]
    assert torch.equal(gm(x), model(x))
    for name, bn in bns.items():  # the traced copy's tensors (shared), never the user's
        user = model.get_submodule(name)
        assert (
            torch.equal(bn.running_var, user.running_var) and bn.running_var.data_ptr() != user.running_var.data_ptr()
        )
        assert bn.eps == user.eps and bn.momentum == user.momentum and bn.affine
    assert {k: v for k, v in model.state_dict().items()}.keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert type(model.bn1) is BatchNormAct2d


def test_sites_see_the_bn_behind_the_subclass_s_drop_and_assert():
    sites = fxsnn.find_sites(fxsnn.trace(_net()))
    assert [(s.name, s.pattern, s.producers, s.channels) for s in sites] == [
        ("bn1.act", "conv→bn→relu", ("conv1", "bn1"), 4),
        ("relu", "add→relu", (), 4),
        ("block.1.act", "conv→bn→relu", ("block.0", "block.1"), 4),
    ]


def test_a_call_that_is_not_the_module_s_own_forward_is_left_functional():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), FrozenBN(4), nn.ReLU()).train()
    gm = fxsnn.trace(model)  # train mode: the call's training=False is not what nn.BatchNorm2d would compute
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"] == [F.batch_norm]
    gm = fxsnn.trace(model.eval())
    assert not [n for n in gm.graph.nodes if n.op == "call_function"]
    assert isinstance(gm.get_submodule("1"), nn.BatchNorm2d)


def test_the_standardisation_is_a_no_op_on_graphs_without_functional_batch_norm():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU()).eval()
    gm = fxsnn.trace(model)
    code = gm.code
    assert batch_norm_modules_(gm, copy.deepcopy(model)) == [] and gm.code == code


def test_convert_full_recalibrates_every_batchnorm_of_the_subclass_and_rate_is_exactly_qcfs():
    model, data = _net(), _data()
    before = _snapshot(model)
    cfg = fxsnn.ConvertConfig().override("stage1.epochs=1", "stage2.train.holdout=None", "stage2.train.epochs=1")
    snn = fxsnn.convert(model, data, T=2, method="full", config=cfg, progress=False)
    assert snn.meta["fxsnn.convert"]["skipped"] == {} and "stage1" in snn.meta["fxsnn.convert"]["seconds"]
    bns = {n: m for n, m in snn.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert sorted(bns) == ["block.1", "bn1", "bn2"]
    for name, bn in bns.items():  # Stage 1 re-estimated the statistics of all three (Eq. 10)
        assert not torch.equal(bn.running_mean, model.get_submodule(name).running_mean), name
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert rate_mode_blockers(snn) == []
    fxsnn.set_mode(snn, "rate")  # the subclass's x.ndim assert does not block rate mode
    da = fxsnn.front_end(model, data, levels=2, progress=False)
    rate = fxsnn.passes.lower_to_paraif(da, T=2, mode="rate")
    x = data[0][0]
    assert torch.equal(rate(x), da(x))


@pytest.mark.parametrize("name", ["dpn68", "repvgg_a0", "regnetx_002"])
def test_real_timm_models_expose_every_batchnorm(name):
    """Only where timm is installed (it is no dependency of fxsnn's tests)."""
    timm_mod = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm_mod.create_model(name, pretrained=False, num_classes=4).eval()
    gm = fxsnn.trace(model)
    count = lambda m: sum(isinstance(b, nn.modules.batchnorm._BatchNorm) for b in m.modules())  # noqa: E731
    assert count(gm) == count(model) > 0
    assert not [n for n in gm.graph.nodes if n.op == "call_function" and n.target is F.batch_norm]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
    gm = fxsnn.calibrate(fxsnn.passes.insert_recorders(gm), [x], progress=False)
    da = fxsnn.passes.to_qcfs(gm, levels=2)
    with torch.no_grad():
        assert torch.equal(fxsnn.passes.lower_to_paraif(da, T=2, mode="rate")(x), da(x))
