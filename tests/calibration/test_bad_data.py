"""Bad data and silent wrong results (issue 9, items 4, 5, 7-11): every case stops with a clear fxsnn error."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import state, tiny_da, tiny_data, tiny_model
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fxsnn
from fxsnn.calibration import measure as measure_module
from fxsnn.calibration.finetune import NonFiniteLossError
from fxsnn.calibration.stage1 import reestimate_bn_stats, reestimate_bn_stats_
from fxsnn.nn import ActivationRecorder

FAST1 = dict(epochs=1, train_theta=False, progress=False)
FAST2 = dict(steps=2, holdout=None, progress=False)


def poisoned(data, index=1, value=float("nan")):
    out = [(x.clone(), y) for x, y in data]
    out[index][0][0, 0, 0, 0] = value
    return out


def finite(module) -> bool:
    return all(torch.isfinite(v).all() for v in module.state_dict().values() if v.is_floating_point())


class Untouchable:
    """Re-iterable data that fails the test if anything iterates it."""

    def __len__(self):
        return 4

    def __iter__(self):
        raise AssertionError("the data was touched before the arguments were validated")


# -- item 4: NaN / Inf inputs and activations -----------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_every_data_step_refuses_non_finite_inputs_naming_the_batch(value):
    model, data = tiny_model(), tiny_data()
    bad = poisoned(data, 1, value)
    rec = fxsnn.passes.insert_recorders(fxsnn.trace(model))
    pct = fxsnn.passes.insert_recorders(fxsnn.trace(model), percentile=99.0)
    da = tiny_da()
    snn = fxsnn.passes.lower_to_paraif(tiny_da(), T=4)
    before = [state(m) for m in (rec, pct, da, snn)]
    steps = {
        "calibrate": lambda: fxsnn.calibrate(rec, bad, progress=False),
        "calibrate (percentile)": lambda: fxsnn.calibrate(pct, bad, progress=False),
        "calibrate_da": lambda: fxsnn.calibrate_da(da, bad, progress=False),
        "reestimate_bn_stats": lambda: reestimate_bn_stats(da, bad, progress=False),
        "recalibrate_bn": lambda: fxsnn.recalibrate_bn(da, bad, **FAST1),
        "tune_delta_b": lambda: fxsnn.tune_delta_b(snn, bad, **FAST2),
        "evaluate": lambda: fxsnn.evaluate(model, bad, progress=False),
        "front_end": lambda: fxsnn.front_end(model, bad, levels=4, progress=False),
        "convert": lambda: fxsnn.convert(model, bad, T=2, method="fspc_da", progress=False),
    }
    for step in steps.values():  # front_end and convert name the data step that found it (fxsnn.calibrate)
        with pytest.raises(fxsnn.DataError, match=r"fxsnn\.[\w.]+: batch 1 has non-finite values at the input"):
            step()
    for m, old in zip((rec, pct, da, snn), before):  # the copy-making steps leave their input untouched
        assert all(torch.equal(old[k], v) for k, v in state(m).items())


def test_percentile_recorder_never_crashes_with_a_raw_bincount_error():
    rec = ActivationRecorder(2, percentile=99.0)
    rec.recording = True
    rec(torch.tensor([[1.0, 2.0]]))
    before = state(rec)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(fxsnn.errors.FxsnnError, match="NaN"):
            rec(torch.tensor([[bad, 1.0]]))
    assert all(torch.equal(before[k], v) for k, v in state(rec).items())  # nothing recorded


def test_non_finite_activation_at_a_recorder_names_the_batch_and_the_site():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        model[2].weight.fill_(3e38)
    data = [torch.ones(2, 4) * 0.01, torch.ones(2, 4) * 10.0]  # the second batch overflows to inf at site '3'
    gm = fxsnn.passes.insert_recorders(fxsnn.trace(model), percentile=99.0)
    with pytest.raises(fxsnn.DataError, match=r"batch 1 has non-finite values at the input of site '3'"):
        fxsnn.calibrate(gm, data, progress=False)


def test_non_finite_activation_at_a_da_probe_names_the_batch_and_the_site():
    da = tiny_da()
    with torch.no_grad():
        da.conv2.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(fxsnn.DataError, match=r"batch 0 has non-finite values at the input of site '\w+'"):
        fxsnn.calibrate_da(da, tiny_data(), progress=False)


def test_non_finite_bn_input_in_reestimate_names_the_batchnorm():
    da = tiny_da()
    with torch.no_grad():
        da.conv2.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(fxsnn.DataError, match="batch 0 has non-finite values at the input of BatchNorm 'bn2'"):
        reestimate_bn_stats(da, tiny_data(), progress=False)


def test_loaders_refuse_zero_or_non_finite_std_and_nan_data(tmp_path):
    import numpy as np

    from fxsnn.io.loaders import InputError, load_data

    np.savez(tmp_path / "ok.npz", x=np.zeros((4, 1, 2, 2), dtype="float32"), y=np.zeros(4, dtype=int))
    for std in ([0.0], [float("nan")], [-1.0]):
        with pytest.raises(InputError, match="std must be finite and > 0") as info:
            load_data(tmp_path / "ok.npz", mean=[0.0], std=std)
        assert info.value.arguments == ("std",)
    x = np.zeros((4, 1, 2, 2), dtype="float32")
    x[2, 0, 1, 1] = np.inf
    np.savez(tmp_path / "inf.npz", x=x, y=np.zeros(4, dtype=int))
    with pytest.raises(InputError, match="NaN or ±Inf"):
        load_data(tmp_path / "inf.npz")


# -- item 5: NonFiniteLossError never hands back ±inf; float16 ------------------------------------
def test_an_overflowing_update_is_caught_at_its_step_and_undone():
    da, data = tiny_da(), tiny_data()
    with pytest.raises(NonFiniteLossError, match="optimizer step made a trained tensor") as info:
        # θ is trained relative to θ·theta_lr/lr: one Adam step of ~lr in z moves θ by ~3e38·θ, past float32's
        # range (lr = 1e30 keeps the gradient finite)
        fxsnn.recalibrate_bn(
            da, data, lr=1e30, lr_min=1e30, theta_lr=3e38, train_theta=True, warmup=0, epochs=1, progress=False
        )
    assert info.value.step == 1 and finite(info.value.model)


def test_float16_is_refused_up_front_naming_the_dtype_and_the_fix():
    da = tiny_da().half()
    with pytest.raises(fxsnn.DataError, match=r"float16.*model\.float\(\)"):
        fxsnn.recalibrate_bn(da, Untouchable(), **FAST1)
    with pytest.raises(fxsnn.DataError, match="float16"):
        fxsnn.convert(tiny_model().half(), Untouchable(), T=2, method="full", progress=False)


# -- item 7: levels != T ---------------------------------------------------------------------------
def test_lowering_with_levels_other_than_T_warns_naming_both():
    rec = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(tiny_model())), tiny_data(), progress=False)
    q = fxsnn.passes.to_qcfs(rec, levels=4)
    with pytest.warns(UserWarning, match=r"levels=4 but are lowered with T=8"):
        fxsnn.passes.lower_to_paraif(q, T=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fxsnn.passes.lower_to_paraif(q, T=4)


# -- item 8: labels and shapes ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "match"),
    [
        (lambda y: torch.full_like(y, -100), r"label -100 .*ignore_index"),
        (lambda y: torch.full_like(y, 3), r"label 3 .*\[0, 3\)"),
        (lambda y: y.float(), "float32 targets.*y.long()"),
        (lambda y: y.view(-1, 1), r"targets of shape \(16, 1\)"),
    ],
)
def test_bad_targets_are_a_data_error_in_evaluate_and_in_fine_tuning(target, match):
    model, data = tiny_model(), tiny_data()
    bad = [(x, target(y)) for x, y in data]
    with pytest.raises(fxsnn.DataError, match=match):
        fxsnn.evaluate(model, bad, progress=False)
    with pytest.raises(fxsnn.DataError, match=match):
        fxsnn.tune_delta_b(fxsnn.passes.lower_to_paraif(tiny_da(), T=4), bad, **FAST2)


def test_mis_shaped_inputs_are_a_data_error_naming_the_batch():
    model = tiny_model()
    data = tiny_data()[:1] + [(torch.zeros(4, 2, 8, 8), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(fxsnn.DataError, match=r"batch 1 of shape \(4, 2, 8, 8\) does not fit the model"):
        fxsnn.evaluate(model, data, progress=False)
    with pytest.raises(fxsnn.DataError, match="does not fit the model"):
        fxsnn.convert(model, data, T=2, method="fspc", progress=False)


# -- item 9: BatchNorm without running statistics, one-sample batches -----------------------------
def test_batchnorm_without_running_statistics_is_refused_naming_it():
    model = tiny_model()
    model.bn2 = nn.BatchNorm2d(6, track_running_stats=False)
    with pytest.raises(fxsnn.ConversionError, match="BatchNorm 'bn2' has no running statistics"):
        fxsnn.convert(model, Untouchable(), T=2, method="fspc", progress=False)
    da = fxsnn.front_end(model, tiny_data(), levels=2, progress=False)
    with pytest.raises(fxsnn.ConversionError, match="'bn2' has no running statistics"):
        fxsnn.recalibrate_bn(da, Untouchable(), **FAST1)


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).eval()


def test_one_sample_batch_in_train_mode_bn_is_a_data_error_and_leaves_the_statistics():
    model = mlp()
    g = torch.Generator().manual_seed(0)
    loader = DataLoader(TensorDataset(torch.randn(9, 4, generator=g), torch.randint(0, 3, (9,), generator=g)), 4)
    gm = fxsnn.front_end(model, loader, levels=2, progress=False)
    before = state(gm)
    with pytest.raises(fxsnn.DataError, match=r"batch 2 .*one value per channel.*drop_last=True"):
        reestimate_bn_stats_(gm, loader, progress=False)
    assert all(torch.equal(before[k], v) for k, v in state(gm).items())


# -- item 10: interrupted re-estimation, NaN held-out loss, rate mode up front, hooks ------------
class Interrupted:
    def __init__(self, data, at):
        self.data, self.at = data, at

    def __iter__(self):
        for i, batch in enumerate(self.data):
            if i == self.at:
                raise KeyboardInterrupt
            yield batch


def test_interrupted_reestimation_leaves_the_statistics_as_they_were():
    da = tiny_da()
    before = state(da)
    with pytest.raises(KeyboardInterrupt):
        reestimate_bn_stats_(da, Interrupted(tiny_data(), 3), progress=False)
    assert all(torch.equal(before[k], v) for k, v in state(da).items())


def test_nan_held_out_loss_stops_stage2(monkeypatch):
    snn, data = fxsnn.passes.lower_to_paraif(tiny_da(), T=4), tiny_data()
    real = F.cross_entropy
    calls = [0]

    def nan_at_second_eval(logits, y, **kw):
        calls[0] += 1
        loss = real(logits, y, **kw)
        return loss * float("nan") if calls[0] > 2 else loss  # 2 held-out batches per evaluation

    monkeypatch.setattr(measure_module, "F", type("F", (), {"cross_entropy": staticmethod(nan_at_second_eval)}))
    with pytest.raises(NonFiniteLossError, match="held-out loss is nan at step 1") as info:
        fxsnn.tune_delta_b(snn, data[2:], holdout=data[:2], eval_every=1, steps=3, progress=False)
    assert finite(info.value.model)


def test_rate_output_mode_is_refused_before_any_work():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.MaxPool2d(2), nn.Flatten())
    cfg = dataclasses.replace(fxsnn.ConvertConfig(), output_mode="rate")
    kw = dict(T=2, method="full", progress=False, allow_analog=True)  # its MaxPool of analog values: a hybrid
    with pytest.raises(fxsnn.ModeError, match="output_mode='rate' is impossible"):
        fxsnn.convert(model, Untouchable(), config=cfg, **kw)
    cfg = fxsnn.ConvertConfig().override("stage2.mode=rate")
    with pytest.raises(fxsnn.ModeError, match="rate-mode training would not give the spike-mode gradient"):
        fxsnn.convert(model, Untouchable(), config=cfg, **kw)


def test_forward_hooks_dropped_by_tracing_are_named():
    model = tiny_model()
    model.bn1.register_forward_hook(lambda m, a, o: None)
    model.linear.register_forward_pre_hook(lambda m, a: None)
    with pytest.warns(UserWarning, match=r"forward hooks on 'bn1', 'linear' are not part of the traced graph"):
        fxsnn.trace(model)


# -- item 11: seed with a DataLoader that has its own generator -----------------------------------
def test_seed_makes_convert_reproducible_with_a_loader_generator():
    x, y = torch.cat([x for x, _ in tiny_data()]), torch.cat([y for _, y in tiny_data()])
    gen = torch.Generator().manual_seed(5)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=gen)
    gen_state = gen.get_state()
    a = fxsnn.convert(tiny_model(), loader, T=2, method="fspc_da", seed=3, progress=False)
    b = fxsnn.convert(tiny_model(), loader, T=2, method="fspc_da", seed=3, progress=False)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert torch.equal(gen.get_state(), gen_state)  # the loader's generator is put back
    c = fxsnn.convert(tiny_model(), loader, T=2, method="fspc_da", seed=4, progress=False)
    assert not all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())
