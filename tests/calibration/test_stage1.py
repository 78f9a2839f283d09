"""Stage 1 (fxsnn.recalibrate_bn, Algorithm 2, Eq. 10) on tiny networks."""

import pytest
import torch
import torch.nn.functional as F
from helpers import changed_keys, da_network, nan_loss_at, state, tiny_da, tiny_data, tiny_model

import fxsnn
from fxsnn.calibration import Stage1Config
from fxsnn.calibration.finetune import NonFiniteLossError

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
#: what recalibrate_bn() did bare before it took a Stage1Config (whose defaults are convert's: 2 epochs, weights tuned)
BARE = dict(epochs=1, train_theta=False, train_weights=False)


def is_bn(key):
    return key.split(".")[0] in ("bn1", "bn2")


def stage1_on_fresh_inputs(**kw):
    """Stage 1 on a fresh DA network of a fresh model: ``(input network, its state before, result)``, after
    checking that neither the model nor the input network was modified."""
    model = tiny_model()
    data = tiny_data()
    model_before = state(model)
    da = da_network(model, data)
    da_before = state(da)
    out = fxsnn.recalibrate_bn(da, data, progress=False, **kw)
    assert not changed_keys(da_before, state(da)), "the input GraphModule was modified"
    assert not changed_keys(model_before, state(model)), "the user's model was modified"
    assert out is not da
    return da, da_before, out


def test_stage1_changes_only_bn_and_theta_and_leaves_inputs_untouched():
    _, da_before, out = stage1_on_fresh_inputs(epochs=2, lr=1e-2, train_theta=True, train_weights=False)
    changed = changed_keys(da_before, state(out))
    assert changed, "Stage 1 changed nothing"
    assert all(is_bn(k) or k.endswith(".theta") for k in changed), changed
    assert any(k.endswith(".theta") for k in changed)
    assert any(k.endswith("bn1.weight") or k.endswith("bn2.bias") for k in changed)


def test_stage1_without_theta_training_keeps_every_theta():
    data = tiny_data()
    da = tiny_da()
    out = fxsnn.recalibrate_bn(da, data, epochs=1, train_theta=False, train_weights=False, lr=1e-2, progress=False)
    changed = changed_keys(state(da), state(out))
    assert changed and all(is_bn(k) for k in changed), changed


def test_train_weights_also_tunes_every_conv_and_linear_weight_and_leaves_inputs_untouched():
    da, da_before, out = stage1_on_fresh_inputs(
        epochs=1, lr=1e-2, weight_lr=1e-2, train_theta=False, train_weights=True
    )
    changed = changed_keys(da_before, state(out))
    weights = {k for k in da_before if k.split(".")[0] in ("conv1", "conv2", "linear")}
    assert weights == {"conv1.weight", "conv2.weight", "linear.weight", "linear.bias"}
    assert weights <= changed, weights - changed
    assert all(is_bn(k) or k in weights for k in changed), changed - weights
    assert [p.requires_grad for p in out.parameters()] == [p.requires_grad for p in da.parameters()]


def test_weight_lr_sets_the_size_of_the_weight_steps():
    data = tiny_data()
    da = tiny_da()
    before = state(da)["conv1.weight"]
    moved = []
    for weight_lr in (1e-4, 1e-2):
        kw = dict(steps=3, lr=1e-2, warmup=0, weight_lr=weight_lr, train_weights=True, train_theta=False)
        out = fxsnn.recalibrate_bn(da, data, progress=False, **kw)
        moved.append(float((out.conv1.weight.detach() - before).abs().max()))
    # Adam moves each variable by about its rate per step: 3 steps at most ~3x the rate, and the ratio ~100
    assert 0 < moved[0] <= 3.5e-4 and moved[1] > 30 * moved[0], moved


def test_bn_stats_are_the_cumulative_eq10_moments_whatever_the_batching():
    model = tiny_model(dtype=torch.float64)
    x = torch.cat([b[0] for b in tiny_data(dtype=torch.float64)])
    da = da_network(model, tiny_data(dtype=torch.float64))
    da_before = state(da)
    a = fxsnn.calibration.reestimate_bn_stats(da, [(x[i : i + 8],) for i in range(0, 96, 8)], progress=False)
    b = fxsnn.calibration.reestimate_bn_stats(da, [(x[i : i + 48],) for i in range(0, 96, 48)], progress=False)
    assert a is not da and not changed_keys(da_before, state(da)), "reestimate_bn_stats modified its input"
    # Eq. 10 for bn1: the exact mean / variance of conv1's output over the whole set.
    phi = F.conv2d(x, model.conv1.weight, padding=1).transpose(0, 1).reshape(model.conv1.out_channels, -1)
    torch.testing.assert_close(a.bn1.running_mean, phi.mean(dim=1))
    torch.testing.assert_close(a.bn1.running_var, phi.var(dim=1, unbiased=True))
    # cumulative, so the batching does not matter for the first BN (an EMA's would); deeper BNs see features
    # normalised with batch statistics upstream (BN in train mode, Algorithm 2), which do depend on it
    torch.testing.assert_close(a.bn1.running_mean, b.bn1.running_mean)
    torch.testing.assert_close(a.bn1.running_var, b.bn1.running_var)


def test_stat_batches_takes_eq10_over_the_leading_batches_and_tunes_on_all_of_them():
    data = tiny_data(n=96, batch=16)  # 6 batches
    da = tiny_da()
    head = fxsnn.calibration.reestimate_bn_stats(da, data[:2], progress=False)
    for kw in (dict(stat_batches=2), dict(stat_batches=2, restat_after=True)):
        out = fxsnn.recalibrate_bn(da, data, lr=1e-2, progress=False, **BARE, **kw)
        report = out.meta["fxsnn.stage1"]
        assert report.batches == 2 and report.steps == 6, report  # the statistics on 2 batches, tuning on all 6
        if not kw.get("restat_after"):  # BN in eval mode: tuning leaves the statistics as Eq. 10 gave them
            for name in ("bn1", "bn2"):
                bn, ref = getattr(out, name), getattr(head, name)
                assert torch.equal(bn.running_mean, ref.running_mean) and torch.equal(bn.running_var, ref.running_var)
    every = fxsnn.recalibrate_bn(da, data, lr=1e-2, progress=False, stat_batches=99, **BARE)
    assert every.meta["fxsnn.stage1"].batches == 6  # more than there are: all of them
    everything = fxsnn.calibration.reestimate_bn_stats(da, data, progress=False)
    assert torch.equal(every.bn2.running_var, everything.bn2.running_var)
    assert not torch.equal(everything.bn2.running_var, head.bn2.running_var)  # the two differ: the test can fail


def test_eval_bn_mode_keeps_the_eq10_statistics_and_train_mode_moves_them():
    data = tiny_data()
    da = tiny_da()
    ref = fxsnn.calibration.reestimate_bn_stats(da, data, progress=False)
    ev = fxsnn.recalibrate_bn(da, data, bn_mode="eval", lr=1e-2, progress=False, **BARE)
    tr = fxsnn.recalibrate_bn(da, data, bn_mode="train", lr=1e-2, progress=False, **BARE)
    torch.testing.assert_close(ev.bn1.running_mean, ref.bn1.running_mean)
    torch.testing.assert_close(ev.bn2.running_var, ref.bn2.running_var)
    assert not torch.allclose(tr.bn1.running_mean, ref.bn1.running_mean)
    assert not ev.training and not ev.bn1.training  # flags restored (the input was in eval mode)


def test_stage1_lowers_the_training_loss():
    data = tiny_data(n=192)
    da = tiny_da()
    out = fxsnn.recalibrate_bn(da, data, epochs=4, lr=2e-2, lr_min=2e-3, train_theta=False, progress=False)
    report = out.meta["fxsnn.stage1"]
    assert report.steps == 4 * len(data) == report.planned_steps
    before = fxsnn.evaluate(fxsnn.calibration.reestimate_bn_stats(da, data, progress=False), data, progress=False)
    after = fxsnn.evaluate(out, data, progress=False)
    assert after.loss < before.loss - 0.05


def test_steps_budget_overrides_epochs():
    data = tiny_data()
    out = fxsnn.recalibrate_bn(tiny_da(), data, epochs=1, steps=15, train_theta=False, progress=False)
    assert out.meta["fxsnn.stage1"].steps == 15  # the data (6 batches) is cycled


def test_works_on_the_plain_ann_as_the_adapted_reference():
    data = tiny_data()
    gm = fxsnn.trace(tiny_model())
    out = fxsnn.recalibrate_bn(gm, data, lr=1e-2, progress=False, **BARE)
    changed = changed_keys(state(gm), state(out))
    assert changed and all(is_bn(k) for k in changed)


# -- bad input ----------------------------------------------------------------------------------------------


def test_data_without_targets_is_refused_with_a_clear_error():
    da = tiny_da()
    with pytest.raises(fxsnn.DataError, match="needs targets"):
        fxsnn.recalibrate_bn(da, tiny_data(targets=False), progress=False)


def test_empty_and_one_shot_data_are_refused():
    data = tiny_data()
    da = tiny_da()
    with pytest.raises(fxsnn.DataError, match="no batches"):
        fxsnn.recalibrate_bn(da, [], progress=False)
    with pytest.raises(fxsnn.DataError, match="one-shot iterator"):
        fxsnn.recalibrate_bn(da, (b for b in data), progress=False)


def test_lowered_network_and_network_without_bn_are_refused():
    data = tiny_data()
    snn = fxsnn.passes.lower_to_paraif(tiny_da(), T=4)
    with pytest.raises(fxsnn.ConversionError, match="tune_delta_b"):
        fxsnn.recalibrate_bn(snn, data, progress=False)
    with pytest.raises(fxsnn.ConversionError, match="no BatchNorm"):
        fxsnn.recalibrate_bn(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 3)), data, progress=False)


@pytest.mark.parametrize(
    "kw",
    [
        dict(bn_mode="batch"),
        dict(lr=0),
        dict(epochs=0),
        dict(warmup=1.5),
        dict(theta_lr=-1),
        dict(weight_lr=0),
        dict(stat_batches=0),
        dict(stat_batches=2.5),
        dict(stat_batches=True),
    ],
)
def test_bad_options_name_the_accepted_range(kw):
    data = tiny_data()
    with pytest.raises(ValueError, match=next(iter(kw))):
        fxsnn.recalibrate_bn(tiny_da(), data, progress=False, **kw)
    with pytest.raises(ValueError, match=next(iter(kw))):
        fxsnn.recalibrate_bn(tiny_da(), data, Stage1Config().replace(**kw), progress=False)


def test_a_config_and_overrides_are_one_way():
    data = tiny_data()
    cfg = Stage1Config().override("train.epochs=1", "train_theta=False", "train.steps=2")
    a = fxsnn.recalibrate_bn(tiny_da(), data, cfg, progress=False)
    b = fxsnn.recalibrate_bn(tiny_da(), data, epochs=1, train_theta=False, steps=2, progress=False)
    assert a.meta["fxsnn.stage1"].steps == 2 and not changed_keys(state(a), state(b))
    with pytest.raises(TypeError, match="unknown option 'epoch'.*valid options: train.epochs"):
        fxsnn.recalibrate_bn(tiny_da(), data, epoch=1, progress=False)


class PoisonedSecondPass:
    """Clean on the first pass (Eq. 10's statistics), a NaN input in batch ``bad`` on every later pass."""

    def __init__(self, data, bad):
        self.data, self.bad, self.passes = data, bad, 0

    def __len__(self):
        return len(self.data)

    def __iter__(self):
        self.passes += 1
        for i, (x, y) in enumerate(self.data):
            if self.passes > 1 and i == self.bad:
                x = x.clone()
                x[0, 0, 0, 0] = float("nan")
            yield x, y


def test_nan_input_in_a_later_pass_is_a_data_error_naming_the_batch():
    data = tiny_data()
    with pytest.raises(fxsnn.DataError, match="batch 3 has non-finite values"):
        fxsnn.recalibrate_bn(tiny_da(), PoisonedSecondPass(data, bad=3), progress=False, **BARE)


def test_nan_loss_stops_at_the_step_and_restores_the_last_good_state(monkeypatch):
    data = tiny_data()
    da = tiny_da()
    kw = dict(lr=1e-2, lr_min=1e-2, warmup=0, progress=False, **BARE)  # a constant rate: replays are exact
    nan_loss_at(monkeypatch, 4)  # finite data (NaN inputs are a DataError, above): the 4th loss is NaN
    with pytest.raises(NonFiniteLossError, match="step 4") as info:
        fxsnn.recalibrate_bn(da, data, **kw)
    monkeypatch.undo()
    err = info.value
    assert err.step == 4 and err.batch == 3
    # the model in the error is the state after the 3 good steps: replaying them reproduces it exactly
    good = fxsnn.recalibrate_bn(da, data, steps=3, **kw)
    assert not changed_keys(state(good), state(err.model))
    assert all(torch.isfinite(v).all() for v in state(err.model).values() if v.is_floating_point())


def test_train_da_also_tunes_the_da_shifts_and_nothing_else():
    data = tiny_data()
    da = tiny_da()
    out = fxsnn.recalibrate_bn(da, data, lr=1e-2, train_da=True, progress=False, **BARE)
    changed = changed_keys(state(da), state(out))
    assert any(k.endswith("psi_da") for k in changed) and any(k.endswith("phi_da") for k in changed)
    assert all(is_bn(k) or k.endswith(("psi_da", "phi_da")) for k in changed), changed
    assert not any(t.requires_grad for t in out.buffers())
