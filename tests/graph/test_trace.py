import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxsnn


class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return F.relu(x)
        return x


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.block = DataDependent()

    def forward(self, x):
        return self.block(self.conv(x))


def test_trace_works_on_a_copy():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    gm = fxsnn.trace(model)
    assert isinstance(gm, torch.fx.GraphModule)
    assert gm.get_submodule("0") is not model[0]
    with torch.no_grad():
        gm.get_submodule("0").weight.zero_()
    assert model[0].weight.abs().sum() > 0


def test_untraceable_model_raises_trace_error_naming_the_module_and_the_fix():
    with pytest.raises(fxsnn.TraceError) as info:
        fxsnn.trace(Outer())
    msg = str(info.value)
    assert "'block'" in msg and "DataDependent" in msg and "leaf_modules=['block']" in msg
    assert info.value.__cause__ is not None


def test_leaf_modules_by_name_and_type_make_it_traceable():
    for leaf in (["block"], [DataDependent]):
        gm = fxsnn.trace(Outer(), leaf_modules=leaf)
        assert any(n.op == "call_module" and n.target == "block" for n in gm.graph.nodes)


def test_trace_rejects_non_modules_and_unknown_leaf_names():
    with pytest.raises(TypeError, match="nn.Module"):
        fxsnn.trace(lambda x: x)
    with pytest.raises(ValueError, match="no such submodule"):
        fxsnn.trace(Outer(), leaf_modules=["nope"])


def test_concrete_args_are_passed_to_the_tracer():
    class Flag(nn.Module):
        def forward(self, x, double: bool = False):
            return F.relu(x) * 2 if double else F.relu(x)

    gm = fxsnn.trace(Flag(), concrete_args={"double": True})
    assert torch.equal(gm(torch.ones(1, 2), True), torch.full((1, 2), 2.0))
