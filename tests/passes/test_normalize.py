"""normalize: each ReLU spelling, shared modules, in-place semantics, names, aliasing errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxsnn
from fxsnn.testing import check_rewrite_preserves_output


class AllSpellings(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.conv(x)
        a = self.relu(y)
        b = F.relu(a - 1.0, inplace=True)
        c = torch.relu(b - 0.5)
        d = torch.relu_(c - 0.1)
        e = F.relu_(d - 0.1)
        f = e.relu()
        g = (f - 0.2).relu_()
        return self.relu(g - 0.3) + F.relu(g)


def _relu_module_targets(gm):
    mods = dict(gm.named_modules())
    return [n.target for n in gm.graph.nodes if n.op == "call_module" and type(mods[n.target]) is nn.ReLU]


def test_every_spelling_becomes_its_own_relu_module_with_readable_names():
    model = AllSpellings().eval()
    x = torch.randn(2, 2, 5, 5)
    gm = check_rewrite_preserves_output(fxsnn.passes.normalize, fxsnn.trace(model), x)
    targets = _relu_module_targets(gm)
    assert len(targets) == 9 and len(set(targets)) == 9
    assert targets == ["relu"] + [f"relu_{i}" for i in range(1, 9)]
    assert not any(n.op in ("call_function", "call_method") and "relu" in str(n.target) for n in gm.graph.nodes)
    assert [n.name for n in gm.graph.nodes if n.op == "call_module" and n.target.startswith("relu")] == [
        t.replace(".", "_") for t in targets
    ]


def test_shared_module_sites_are_split_under_their_parent():
    tv = pytest.importorskip("torchvision")
    gm = fxsnn.passes.normalize(fxsnn.trace(tv.models.resnet18().eval()))
    targets = _relu_module_targets(gm)
    assert "layer1.0.relu" in targets and "layer1.0.relu_1" in targets
    assert len(targets) == len(set(targets)) == 17


def test_inplace_relu_whose_input_is_read_later_keeps_its_semantics():
    class Fork(nn.Module):
        def forward(self, x):
            y = x * 2
            early = y + 1  # reads y before the in-place ReLU: sees the raw values
            r = F.relu(y, inplace=True)
            return r + y + early  # y was rectified in place: reads the ReLU's output

    x = torch.randn(3, 4)
    check_rewrite_preserves_output(fxsnn.passes.normalize, fxsnn.trace(Fork()), x)


def test_inplace_relu_on_an_alias_read_later_is_refused_with_the_node_named():
    class Alias(nn.Module):
        def forward(self, x):
            y = x * 2
            v = y.view(-1)
            torch.relu_(y)
            return v.sum() + y.sum()

    with pytest.raises(fxsnn.ConversionError, match="in-place ReLU.*alias"):
        fxsnn.passes.normalize(fxsnn.trace(Alias()))


def test_inplace_relu_on_the_model_input_does_not_touch_the_callers_tensor():
    class OnInput(nn.Module):
        def forward(self, x):
            return F.relu(x, inplace=True) + 1

    gm = fxsnn.passes.normalize(fxsnn.trace(OnInput()))
    x = torch.randn(2, 3)
    before = x.clone()
    gm(x)
    assert torch.equal(x, before)


def test_normalize_is_idempotent_and_rejects_non_modules():
    gm = fxsnn.passes.normalize(fxsnn.trace(AllSpellings()))
    again = fxsnn.passes.normalize(gm)
    assert again.code == gm.code
    with pytest.raises(TypeError, match="nn.Module"):
        fxsnn.passes.normalize("not a model")


def test_sites_table_lists_patterns_and_channels():
    model = fxsnn.models.cifar_resnet(20)
    sites = fxsnn.find_sites(fxsnn.passes.normalize(fxsnn.trace(model)))
    assert len(sites) == 19
    assert sites[0].pattern == "conv→bn→relu" and sites[0].producers == ("conv1", "bn1") and sites[0].channels == 16
    assert sites[2].name == "layer1.0.relu_1" and sites[2].pattern == "add→relu"
    assert [s.channels for s in sites[-2:]] == [64, 64]
    text = str(sites)
    assert "layer3.2.relu_1" in text and "pattern" in text and "channels" in text
    assert fxsnn.find_sites(fxsnn.trace(nn.Sequential(nn.Linear(3, 4), nn.ReLU())))[0].pattern == "linear→relu"
