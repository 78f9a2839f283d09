"""Feature matching (objective="distill", feature_weight > 0; fxsnn.calibration.features)."""

import pytest
import torch
from helpers import changed_keys, state, tiny_data, tiny_model
from torch import nn

import fxsnn
from fxsnn.calibration import Stage1Config, Stage2Config
from fxsnn.calibration.distill import kl_loss
from fxsnn.calibration.features import FeatureDistill, feature_loss
from fxsnn.calibration.front import front_end
from fxsnn.validation import ConfigError

FEATURES = fxsnn.ConvertConfig().override(
    "stage1.objective=distill", "stage2.objective=distill", "stage1.feature_weight=1.0", "stage2.feature_weight=1.0"
)


def test_feature_loss_is_the_mean_relative_squared_error_over_sites():
    g = torch.Generator().manual_seed(0)
    t = {"a": torch.rand(2, 3, 4, generator=g), "b": torch.rand(2, 5, generator=g), "z": torch.zeros(2, 2)}
    s = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in t.items()}
    want = [((s[k] - t[k]) ** 2).sum() / (t[k] ** 2).sum() for k in ("a", "b")] + [((s["z"]) ** 2).mean()]
    torch.testing.assert_close(feature_loss(s, t), torch.stack(want).mean())
    assert float(feature_loss(t, t)) == 0.0


@pytest.mark.parametrize("stage", ["front end", "lowered rate", "lowered spike"])
def test_feature_distill_reads_each_sites_output_and_the_teachers_activation(stage):
    """The loss equals KL + λ·feature_loss of the site outputs, computed by hand from a second forward."""
    model, data = tiny_model(), tiny_data(targets=False)
    student = front_end(model, data, levels=2, progress=False)
    if stage != "front end":
        student = fxsnn.set_mode(fxsnn.passes.lower_to_paraif(student, T=2), stage.split()[1])
    names = [s.name for s in fxsnn.find_sites(student)]
    x = data[0][0]
    loss = FeatureDistill(student, model, temperature=2.0, weight=0.5, output=None, where="test")
    with loss:
        got = loss(student(x))
    assert not student._forward_hooks and not student._forward_pre_hooks  # the hooks went with the block
    assert all(not student.get_submodule(n)._forward_hooks for n in names)

    ours, theirs = {}, {}
    hooks = [student.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: ours.setdefault(n, o)) for n in names]
    teacher = fxsnn.passes.normalize(fxsnn.trace(model))
    hooks += [
        teacher.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: theirs.setdefault(n, o)) for n in names
    ]
    logits, z = student(x), teacher(x)
    for h in hooks:
        h.remove()
    if stage == "lowered spike":  # [T·B, ...] weighted spikes: their time mean is the rate
        ours = {n: o.reshape(2, len(x), *o.shape[1:]).mean(0) for n, o in ours.items()}
    want = kl_loss(2.0)(logits, z) + 0.5 * feature_loss(ours, theirs)
    torch.testing.assert_close(got, want)
    assert float(feature_loss(ours, theirs).detach()) > 0


def test_feature_matching_converts_without_labels_and_leaves_model_and_hooks_clean():
    model = tiny_model()
    before = state(model)
    snn = fxsnn.convert(model, tiny_data(targets=False), T=2, method="full", config=FEATURES, progress=False)
    assert snn.meta["fxsnn.stage1"].steps > 0 and snn.meta["fxsnn.stage2"].steps > 0
    assert not changed_keys(before, state(model))
    modules = [snn, *snn.modules(), model, *model.modules()]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def test_feature_matching_changes_what_stage1_learns():
    """λ > 0 is not the plain KL: the tuned BN terms differ (same data, seed and steps)."""
    model, data = tiny_model(), tiny_data(targets=False)
    da = front_end(model, data, levels=2, progress=False)
    kl = fxsnn.recalibrate_bn(da, data, Stage1Config(objective="distill"), teacher=model, progress=False)
    with_f = fxsnn.recalibrate_bn(
        da, data, Stage1Config(objective="distill", feature_weight=10.0), teacher=model, progress=False
    )
    assert changed_keys(state(kl), state(with_f))


def test_feature_weight_needs_the_distill_objective_and_is_checked():
    with pytest.raises(ConfigError, match="feature_weight must be 0 unless objective='distill'"):
        Stage1Config(feature_weight=1.0)
    with pytest.raises(ConfigError, match="feature_weight"):
        Stage2Config(objective="distill", feature_weight=-1.0)
    with pytest.raises(ConfigError, match="stage2.feature_weight"):
        fxsnn.ConvertConfig().override("stage2.feature_weight=nan")


def test_feature_matching_refuses_a_teacher_with_other_sites_and_a_user_loss():
    model, data = tiny_model(), tiny_data(targets=False)
    da = front_end(model, data, levels=2, progress=False)
    cfg = Stage1Config(objective="distill", feature_weight=1.0)
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(fxsnn.CalibrationError, match="has no site"):
        fxsnn.recalibrate_bn(da, data, cfg, teacher=other, progress=False)
    with pytest.raises(fxsnn.CalibrationError, match="no loss_fn"):
        fxsnn.recalibrate_bn(da, data, cfg, teacher=model, loss_fn=kl_loss(), progress=False)
