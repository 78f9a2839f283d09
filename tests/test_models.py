"""The whole data-free chain on real architectures, with random calibration tensors."""

import numpy as np
import pytest
import torch
from conftest import RESNET20, load_cifar, needs_shared_data

import fxsnn


def _chain(model, x, T=2):
    gm = fxsnn.passes.insert_recorders(fxsnn.trace(model.eval()), percentile=99.9)
    gm = fxsnn.calibrate(gm, [x], progress=False)
    q = fxsnn.passes.to_da_qcfs(gm, levels=T)
    q = fxsnn.calibrate_da(q, [x], progress=False)
    snn = fxsnn.passes.lower_to_paraif(q, T=T, mode="rate")
    with torch.no_grad():
        rate = snn(x)
        assert torch.equal(rate, q(x))
        fxsnn.set_mode(snn, "spike")
        spike = snn(x)
    assert rate.shape == spike.shape == model(x).shape
    assert torch.isfinite(spike).all()
    return gm, snn


@pytest.mark.parametrize("depth,sites", [(20, 19), (32, 31), (44, 43), (56, 55)])
def test_cifar_resnets_convert_end_to_end(depth, sites):
    torch.manual_seed(depth)
    model = fxsnn.models.cifar_resnet(depth)
    gm, snn = _chain(model, torch.randn(4, 3, 16, 16))
    assert len(fxsnn.find_sites(gm)) == sites == len(fxsnn.modes.neurons(snn))
    assert all(s.channels in (16, 32, 64) for s in fxsnn.find_sites(snn))


def test_cifar_resnet_state_dict_names_match_the_published_checkpoint_layout():
    names = set(fxsnn.models.cifar_resnet(20).state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer2.0.conv1.weight", "layer3.2.bn2.bias", "linear.weight"} <= names
    with pytest.raises(ValueError, match="depth must be 6n"):
        fxsnn.models.cifar_resnet(21)


@pytest.mark.parametrize("depth", [21, 2, 0, -4, 20.0, True, "20"])
def test_cifar_resnet_refuses_a_depth_that_is_not_6n_plus_2(depth):
    with pytest.raises(ValueError, match=r"depth must be 6n \+ 2 for a whole n >= 1"):
        fxsnn.models.cifar_resnet(depth)


@pytest.mark.parametrize("depth, n", [(8, 1), (26, 4), (np.int64(20), 3)])
def test_cifar_resnet_builds_a_6n_plus_2_depth_with_n_blocks_per_stage(depth, n):
    model = fxsnn.models.cifar_resnet(depth)
    assert [len(stage) for stage in (model.layer1, model.layer2, model.layer3)] == [n, n, n]


@pytest.mark.slow
@pytest.mark.parametrize("name,size", [("resnet18", 64), ("resnet50", 64), ("vgg16_bn", 32)])
def test_torchvision_models_convert_end_to_end(name, size):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = getattr(tv.models, name)(num_classes=10)
    gm, snn = _chain(model, torch.randn(2, 3, size, size))
    expected = {"resnet18": 17, "resnet50": 49, "vgg16_bn": 15}[name]
    assert len(fxsnn.modes.neurons(snn)) == expected
    assert fxsnn.graph.rate_mode_blockers(snn) == []  # MaxPools read neurons directly: rate mode stays exact


@needs_shared_data
def test_shared_resnet20_scores_81_03_percent_as_an_ann():
    model = fxsnn.models.cifar_resnet(20, weights=RESNET20)
    x, y = load_cifar("test")
    result = fxsnn.evaluate(model, [(x[i : i + 1000], y[i : i + 1000]) for i in range(0, len(y), 1000)], progress=False)
    assert result.samples == 10_000
    assert round(100 * result.top1, 2) == 81.03
    # the traced, normalised graph and its recorders compute the same ANN
    gm = fxsnn.passes.insert_recorders(fxsnn.trace(model))
    with torch.no_grad():
        assert torch.equal(gm(x[:256]), model(x[:256]))
