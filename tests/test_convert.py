"""fxsnn.convert: the one-call path, its methods, its options and its bad input."""

import pytest
import torch
from _tiny import changed_keys, state, tiny_data, tiny_model
from torch.utils.data import DataLoader, TensorDataset

import fxsnn
from fxsnn.config import METHODS, ConvertConfig

FAST = dict(s1_epochs=1, s2_epochs=1, calibration_batches=None, s2_holdout=None, progress=False)


def loader(seed=1):
    x = torch.cat([b[0] for b in tiny_data(seed=seed)])
    y = torch.cat([b[1] for b in tiny_data(seed=seed)])
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)


def test_same_seed_is_bit_identical_and_the_model_is_untouched():
    model = tiny_model()
    before = state(model)
    a = fxsnn.convert(model, loader(), T=4, method="full", seed=5, **FAST)
    rng = torch.get_rng_state()
    b = fxsnn.convert(model, loader(), T=4, method="full", seed=5, **FAST)
    assert torch.equal(rng, torch.get_rng_state()), "convert changed the caller's random state"
    assert not changed_keys(state(a), state(b))
    c = fxsnn.convert(model, loader(), T=4, method="full", seed=6, **FAST)
    assert changed_keys(state(a), state(c)), "the seed does not reach the shuffling DataLoader"
    assert not changed_keys(before, state(model))


def test_each_method_runs_its_stages():
    model, data = tiny_model(), tiny_data()
    nets = {m: fxsnn.convert(model, data, T=2, method=m, **FAST) for m in METHODS}
    for m, net in nets.items():
        assert fxsnn.time_steps(net) == 2 and fxsnn.get_mode(net) == "spike"
        assert net.meta["fxsnn.convert"]["method"] == m
        cells = fxsnn.neurons(net).values()
        assert all(n.has_da for n in cells) == (m != "fspc")
        tuned = any(bool(n.delta_b.ne(0).any()) for n in cells)
        assert tuned == (m in ("temporal", "full")), m
    bn = lambda net: net.get_submodule("bn1").weight  # noqa: E731
    assert torch.equal(bn(nets["fspc_da"]), bn(nets["temporal"]))  # no Stage 1
    assert not torch.equal(bn(nets["fspc_da"]), bn(nets["spatial"]))  # Stage 1
    seconds = nets["full"].meta["fxsnn.convert"]["seconds"]
    assert {"calibrate", "calibrate_da", "stage1", "stage2"} <= set(seconds)


def test_baselines_are_faithful_to_fspc_running_max():
    model, data = tiny_model(), tiny_data()
    net = fxsnn.convert(model, data, T=4, method="fspc", theta_percentile=50.0, **FAST)
    gm = fxsnn.passes.insert_recorders(fxsnn.trace(model))
    fxsnn.calibrate(gm, data, progress=False)
    ref = fxsnn.passes.lower_to_paraif(fxsnn.passes.to_qcfs(gm, levels=4), T=4)
    assert not changed_keys(state(ref), state(net))  # theta_percentile does not apply to the baseline


def test_paper_recipe_and_overrides():
    paper = ConvertConfig.recipe("paper")
    assert paper.theta_percentile is None and paper.s1_bn_mode == "train" and not paper.s1_train_theta
    assert paper.s1_epochs == paper.s2_epochs == 1 and paper.s2_parameterization == "absolute"
    net = fxsnn.convert(tiny_model(), tiny_data(), T=2, recipe="paper", s2_epochs=2, progress=False)
    cfg = net.meta["fxsnn.convert"]["config"]
    assert cfg.s2_epochs == 2 and cfg.s1_bn_mode == "train"


def test_output_mode_rate():
    net = fxsnn.convert(tiny_model(), tiny_data(), T=2, method="fspc", output_mode="rate", progress=False)
    assert fxsnn.get_mode(net) == "rate"


# -- bad input ----------------------------------------------------------------------------------------------


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(
        ValueError, match="unknown method 'fspc2'; valid methods: fspc, fspc_da, spatial, temporal, full"
    ):
        fxsnn.convert(tiny_model(), tiny_data(), T=2, method="fspc2")


def test_unknown_recipe_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown recipe 'papr'; valid recipes: fxsnn, paper"):
        fxsnn.convert(tiny_model(), tiny_data(), T=2, recipe="papr")


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(TypeError, match="unknown convert option.*s1_epoch.*valid options: theta_percentile"):
        fxsnn.convert(tiny_model(), tiny_data(), T=2, s1_epoch=1)
    with pytest.raises(ValueError, match="valid recipes: fxsnn, paper"):
        fxsnn.convert(tiny_model(), tiny_data(), T=2, recipe="nature")


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(theta_percentile=0), "theta_percentile"),
        (dict(s1_epochs=0), "s1_epochs"),
        (dict(s2_lr=-1), "s2_lr"),
        (dict(s1_bn_mode="frozen"), "s1_bn_mode must be one of"),
        (dict(s2_holdout=2.5), "s2_holdout"),
        (dict(da_momentum=1.0), "da_momentum"),
        (dict(output_mode="serial"), "output_mode"),
    ],
)
def test_config_is_validated_on_construction(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ConvertConfig(**kw)


def test_targets_are_needed_by_the_stages_only():
    model = tiny_model()
    fxsnn.convert(model, tiny_data(targets=False), T=2, method="fspc_da", progress=False)  # no targets needed
    for method in ("spatial", "temporal", "full"):
        with pytest.raises(fxsnn.DataError, match="needs targets"):
            fxsnn.convert(model, tiny_data(targets=False), T=2, method=method, progress=False)


def test_empty_one_shot_and_bad_T_are_refused():
    model = tiny_model()
    with pytest.raises(fxsnn.DataError, match="no batches"):
        fxsnn.convert(model, [], T=2, progress=False)
    with pytest.raises(fxsnn.DataError, match="one-shot iterator"):
        fxsnn.convert(model, iter(tiny_data()), T=2, progress=False)
    with pytest.raises(ValueError, match="T must be an integer >= 1"):
        fxsnn.convert(model, tiny_data(), T=0)
