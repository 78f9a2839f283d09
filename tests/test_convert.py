"""fxsnn.convert: the one-call path, its methods, its options and its bad input."""

import pytest
import torch
from helpers import changed_keys, state, tiny_data, tiny_model
from torch.utils.data import DataLoader, TensorDataset

import fxsnn
from fxsnn.config import METHODS, PAPER, ConvertConfig, auto_percentile
from fxsnn.validation import ConfigError

FAST_CONFIG = ConvertConfig().replace(
    **{"stage1.epochs": 1, "stage2.epochs": 1, "calibration_batches": None, "stage2.holdout": None}
)
FAST = dict(config=FAST_CONFIG, progress=False)


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
        assert fxsnn.modes.time_steps(net) == 2 and fxsnn.modes.get_mode(net) == "spike"
        assert net.meta["fxsnn.convert"]["method"] == m
        cells = fxsnn.modes.neurons(net).values()
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
    net = fxsnn.convert(
        model, data, T=4, method="fspc", config=FAST_CONFIG.replace(theta_percentile=50.0), progress=False
    )
    gm = fxsnn.passes.insert_recorders(fxsnn.trace(model))
    gm = fxsnn.calibrate(gm, data, progress=False)
    ref = fxsnn.passes.lower_to_paraif(fxsnn.passes.to_qcfs(gm, levels=4), T=4)
    assert not changed_keys(state(ref), state(net))  # theta_percentile does not apply to the baseline


def test_paper_recipe_and_overrides():
    paper = ConvertConfig.recipe("paper")
    assert paper is PAPER
    assert paper.theta_percentile is None and paper.stage1.bn_mode == "train" and not paper.stage1.train_theta
    assert paper.stage1.train.epochs == paper.stage2.train.epochs == 1 and paper.stage2.parameterization == "absolute"
    net = fxsnn.convert(tiny_model(), tiny_data(), T=2, config=paper.override("stage2.epochs=2"), progress=False)
    cfg = net.meta["fxsnn.convert"]["config"]
    assert cfg.stage2.train.epochs == 2 and cfg.stage1.bn_mode == "train"


def test_every_knob_of_every_stage_is_reachable_by_dotted_key():
    cfg = ConvertConfig()
    for key in cfg.keys():
        head, _, leaf = key.rpartition(".")
        owner = cfg
        for part in filter(None, head.split(".")):
            owner = getattr(owner, part)
        value = getattr(owner, leaf)
        assert cfg.replace(**{key: value}) == cfg, key  # every key resolves, the value round-trips
    assert {"stage1.train_da", "stage1.train.clip_grad", "stage1.train.holdout", "stage1.train.patience"} <= set(
        cfg.keys()
    )
    assert "stage2.train.eval_every" in cfg.keys() and "stage2.surrogate" in cfg.keys()
    same = cfg.override("stage1.epochs=5", "stage2.train.lr=0.01", "stage1.bn_mode=train", "stage2.holdout=None")
    assert same == cfg.replace(
        **{"stage1.train.epochs": 5, "stage2.train.lr": 0.01, "stage1.bn_mode": "train", "stage2.train.holdout": None}
    )
    assert same.stage1.train.epochs == 5 and same.stage2.train.holdout is None
    assert cfg.stage1.train.epochs == 2, "override returned a copy"


def test_the_defaults_are_the_validated_ones():
    cfg = ConvertConfig()
    s1, s2 = cfg.stage1, cfg.stage2
    assert (cfg.theta_percentile, cfg.calibration_batches, cfg.da_momentum, cfg.output_mode) == (
        "auto",
        20,
        0.99,
        "spike",
    )
    assert [auto_percentile(T) for T in (1, 2, 4, 8)] == [98.0, 99.0, 99.5, 99.75]  # 100 − 2/T
    assert (s1.train.epochs, s1.train.lr, s1.train.lr_min, s1.train.warmup) == (2, 2e-2, 1e-3, 0.1)
    assert (s1.bn_mode, s1.train_theta, s1.theta_lr, s1.restat_after, s1.train_da) == (
        "eval",
        False,
        None,
        False,
        False,
    )
    assert (s1.train_weights, s1.weight_lr) == (True, 1e-3)
    assert (s1.train.clip_grad, s1.train.holdout, s1.train.patience) == (None, None, None)
    assert (s2.train.epochs, s2.train.lr, s2.train.lr_min, s2.train.warmup) == (1, 3e-3, 0.0, 0.1)
    assert (s2.train.clip_grad, s2.train.holdout, s2.train.patience) == (1.0, 0.1, 3)
    assert (s2.width, s2.parameterization, s2.mode, s2.surrogate) == (0.5, "relative", "auto", "ste")


def test_output_mode_rate():
    net = fxsnn.convert(
        tiny_model(), tiny_data(), T=2, method="fspc", config=ConvertConfig(output_mode="rate"), progress=False
    )
    assert fxsnn.modes.get_mode(net) == "rate"


# -- bad input ----------------------------------------------------------------------------------------------


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(
        ValueError, match="unknown method 'fspc2'; valid methods: fspc, fspc_da, spatial, temporal, full"
    ):
        fxsnn.convert(tiny_model(), tiny_data(), T=2, method="fspc2")


def test_unknown_recipe_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown recipe 'papr'; valid recipes: fxsnn, paper"):
        ConvertConfig.recipe("papr")


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(TypeError, match="unknown option 'stage1.epoch'.*valid options: theta_percentile"):
        ConvertConfig().replace(**{"stage1.epoch": 1})
    with pytest.raises(TypeError, match="unknown option 's1_epochs'.*stage1.train.epochs"):
        ConvertConfig().override("s1_epochs=1")
    with pytest.raises(ValueError, match="valid recipes: fxsnn, paper"):
        ConvertConfig.recipe("nature")
    with pytest.raises(TypeError, match="unexpected keyword argument 's1_epochs'"):
        fxsnn.convert(tiny_model(), tiny_data(), T=2, s1_epochs=1)
    with pytest.raises(TypeError, match="config must be a ConvertConfig"):
        fxsnn.convert(tiny_model(), tiny_data(), T=2, config={"stage1.epochs": 1})


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(theta_percentile=0), "theta_percentile"),
        ({"stage1.epochs": 0}, "stage1.train.epochs"),
        ({"stage2.train.lr": -1}, "stage2.train.lr"),
        ({"stage1.bn_mode": "frozen"}, "stage1.bn_mode must be one of"),
        ({"stage2.holdout": 2.5}, "stage2.train.holdout"),
        (dict(da_momentum=1.0), "da_momentum"),
        (dict(output_mode="serial"), "output_mode"),
    ],
)
def test_config_is_validated_on_construction(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ConvertConfig().replace(**kw)
    if "." not in next(iter(kw)):
        with pytest.raises(ValueError, match=msg):
            ConvertConfig(**kw)


@pytest.mark.parametrize(
    "assignment, msg",
    [
        ("stage1.train.lr=-1", r"ConvertConfig: stage1.train.lr must be a finite number > 0; got -1"),
        ("stage1.epochs=abc", r"stage1.train.epochs must be an integer >= 1; got 'abc'"),
        ("stage1.epochs=1.5", r"stage1.train.epochs must be an integer >= 1; got 1.5"),
        ("stage2.train.lr_min=1", r"stage2.train.lr_min must be a finite number in \[0, 0.003\]; got 1"),
        ("stage2.train.warmup=-0.5", r"stage2.train.warmup must be a fraction in \[0, 1\) or a whole number"),
        ("stage1.train_theta=yes", r"stage1.train_theta must be True or False; got 'yes'"),
        ("stage1.theta_lr=0", r"stage1.theta_lr must be None or a finite number > 0; got 0"),
        ("stage2.width=inf", r"stage2.width must be a finite number > 0; got 'inf'"),
        ("stage2.surrogate=sigmoid", r"stage2.surrogate must be one of \('triangle', 'ste'\); got 'sigmoid'"),
        ("stage2.holdout=abc", r"stage2.train.holdout must be None, a fraction in \(0, 1\)"),
        ("stage1=3", r"ConvertConfig: stage1 must be a Stage1Config; got 3"),
        ("calibration_batches=0", r"calibration_batches must be None or an integer >= 1; got 0"),
    ],
)
def test_bad_values_name_the_field_and_the_accepted_range(assignment, msg):
    with pytest.raises(ConfigError, match=msg):
        ConvertConfig().override(assignment)


def test_assignments_must_be_key_equals_value():
    with pytest.raises(ValueError, match="'stage1.epochs' is not of the form KEY=VALUE.*valid keys: theta_percentile"):
        ConvertConfig().override("stage1.epochs")


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
