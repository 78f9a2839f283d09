"""Label-free calibration (objective="distill", fxsnn.calibration.distill) and Stage 2's straight-through estimator."""

import pytest
import torch
import torch.nn.functional as F
from helpers import changed_keys, state, tiny_da, tiny_data, tiny_model

import fxsnn
from fxsnn.calibration import Stage1Config, Stage2Config
from fxsnn.calibration.distill import Distilled, kl_loss
from fxsnn.validation import ConfigError

DISTILL = fxsnn.ConvertConfig().override("stage1.objective=distill", "stage2.objective=distill")


def test_kl_loss_is_the_tempered_kl_divergence_times_tau_squared():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    for tau in (1.0, 2.0, 4.0):
        want = F.kl_div(F.log_softmax(s / tau, 1), F.log_softmax(t / tau, 1), log_target=True, reduction="batchmean")
        torch.testing.assert_close(kl_loss(tau)(s, t), want * tau * tau)
    assert float(kl_loss(2.0)(t, t)) == pytest.approx(0.0, abs=1e-7)
    dense_s, dense_t = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    per_pos = kl_loss()(dense_s.permute(0, 2, 3, 1).reshape(-1, 3), dense_t.permute(0, 2, 3, 1).reshape(-1, 3))
    torch.testing.assert_close(kl_loss()(dense_s, dense_t), per_pos)


@pytest.mark.parametrize("form", ["tuple", "tensor", "labelled"])
def test_distilled_data_pairs_each_input_with_the_teachers_logits(form):
    model = tiny_model()
    data = tiny_data(targets=form == "labelled")
    data = [b[0] for b in data] if form == "tensor" else data
    pairs = list(Distilled(data, model, where="test"))
    assert len(pairs) == len(data)
    for (x, z), b in zip(pairs, data):
        xb = b if form == "tensor" else b[0]
        assert x is xb
        torch.testing.assert_close(z, model(xb))
        assert not z.requires_grad


@pytest.mark.parametrize("method", ["spatial", "temporal", "full"])
@pytest.mark.parametrize("form", ["tuple", "tensor"])
def test_convert_with_distillation_needs_no_targets_and_leaves_the_teacher_untouched(method, form):
    assert DISTILL.stage1.distill_weight == 0.5  # kept from the defaults, and ignored by objective='distill'
    model = tiny_model()
    before = state(model)
    data = tiny_data(targets=False)
    data = [b[0] for b in data] if form == "tensor" else data
    snn = fxsnn.convert(model, data, T=2, method=method, config=DISTILL, progress=False)
    assert not changed_keys(before, state(model)) and not model.training
    assert all(p.grad is None for p in model.parameters())
    reports = [snn.meta.get(k) for k in ("fxsnn.stage1", "fxsnn.stage2") if k in snn.meta]
    if method != "spatial":
        assert snn.meta["fxsnn.stage2"].steps > 0
    assert all(r.steps > 0 for r in reports if r is not None)


def test_labels_objective_still_needs_targets():
    with pytest.raises(fxsnn.DataError, match="needs targets"):
        fxsnn.convert(tiny_model(), tiny_data(targets=False), T=2, method="full", progress=False)


def test_stage1_distillation_lowers_the_kl_to_the_teacher():
    model = tiny_model()
    data = tiny_data()
    da = fxsnn.front_end(model, data, levels=2, progress=False)
    tuned = fxsnn.recalibrate_bn(da, data, objective="distill", epochs=6, teacher=model, progress=False)
    kl = kl_loss()
    with torch.no_grad():
        start = sum(
            float(kl(fxsnn.calibration.reestimate_bn_stats(da, data, progress=False)(x), model(x))) for x, _ in data
        )
        end = sum(float(kl(tuned(x), model(x))) for x, _ in data)
    assert end < start
    losses = tuned.meta["fxsnn.stage1"].losses
    assert sum(losses[-3:]) < sum(losses[:3])


def test_stage2_distillation_trains_delta_b_on_input_only_batches():
    model = tiny_model()
    snn = fxsnn.passes.lower_to_paraif(tiny_da(T=2), T=2)
    data = [x for x, _ in tiny_data()]
    out = fxsnn.tune_delta_b(snn, data, objective="distill", teacher=model, epochs=2, holdout=1, progress=False)
    rep = out.meta["fxsnn.stage2"]
    assert rep.steps > 0 and rep.holdout and all(h >= 0 for _, h in rep.holdout)
    assert any(bool(n.delta_b.abs().gt(0).any()) for n in fxsnn.modes.neurons(out).values()) or rep.best_step == 0


def test_distillation_without_a_teacher_is_refused_before_any_work():
    da = tiny_da(T=2)
    with pytest.raises(fxsnn.CalibrationError, match="teacher="):
        fxsnn.recalibrate_bn(da, tiny_data(targets=False), objective="distill", progress=False)
    snn = fxsnn.passes.lower_to_paraif(da, T=2)
    with pytest.raises(fxsnn.CalibrationError, match="teacher="):
        fxsnn.tune_delta_b(snn, tiny_data(targets=False), objective="distill", progress=False)


@pytest.mark.parametrize("kind", [Stage1Config, Stage2Config])
@pytest.mark.parametrize(
    "kw, msg", [(dict(objective="kd"), "objective must be one of"), (dict(temperature=0), "temperature")]
)
def test_bad_objective_and_temperature_are_refused(kind, kw, msg):
    with pytest.raises(ConfigError, match=msg):
        kind(**kw)


# -- Stage 2's straight-through estimator ------------------------------------------------------------------


def one_neuron(T, dtype=torch.float64, spike=False):
    theta = torch.tensor([1.0, 0.5], dtype=dtype)
    n = fxsnn.nn.ParallelIF(
        theta, T=T, mode="spike" if spike else "rate", psi_da=torch.tensor([0.05, -0.02], dtype=dtype)
    )
    n.surrogate = "ste"
    return n


def test_ste_gradient_is_q_over_theta_inside_the_range_and_zero_outside():
    T = 4
    n = one_neuron(T)
    with torch.no_grad():
        n.delta_b.copy_(torch.tensor([0.1, -0.05], dtype=torch.float64))
    x = torch.linspace(-0.5, 2.0, 40, dtype=torch.float64).view(20, 2).requires_grad_(True)
    n(x).sum().backward()
    th = n.theta_pre - n.delta_b.detach()
    q = ((x.detach() + n.psi_da) * T + n.psi) / th
    inside = ((q > 0) & (q < T)).double()
    assert 0 < inside.sum() < inside.numel()  # both cases occur
    torch.testing.assert_close(x.grad, inside * n.theta_post / th)
    torch.testing.assert_close(n.delta_b.grad, (inside * n.theta_post / T * q / th).sum(0))


def test_ste_rate_and_spike_mode_give_the_same_gradient_float64():
    snn = fxsnn.passes.lower_to_paraif(tiny_da(T=3, dtype=torch.float64), T=3)
    data = tiny_data(dtype=torch.float64)
    for n in fxsnn.modes.neurons(snn).values():
        n.surrogate = "ste"
    grads = {}
    for mode in ("rate", "spike"):
        fxsnn.set_mode(snn, mode)
        for n in fxsnn.modes.neurons(snn).values():
            n.delta_b.grad = None
        sum(F.cross_entropy(snn(x), y, reduction="sum") for x, y in data).backward()
        grads[mode] = [n.delta_b.grad.clone() for n in fxsnn.modes.neurons(snn).values()]
    assert any(bool(g.abs().gt(1e-6).any()) for g in grads["rate"])
    for a, b in zip(grads["rate"], grads["spike"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_stage2_with_the_ste_trains_delta_b_and_restores_the_surrogate():
    snn = fxsnn.passes.lower_to_paraif(tiny_da(T=4), T=4)
    out = fxsnn.tune_delta_b(
        snn, tiny_data(), surrogate="ste", steps=3, lr=0.05, warmup=0, holdout=None, progress=False
    )
    cells = list(fxsnn.modes.neurons(out).values())
    assert any(bool(n.delta_b.abs().gt(0).any()) for n in cells)
    assert all(n.surrogate == "triangle" for n in cells)


def test_adapted_teacher_has_the_calibration_statistics_and_the_model_is_untouched(monkeypatch):
    from fxsnn.calibration import stage1

    model = tiny_model()
    before = state(model)
    data = tiny_data(targets=False)
    seen = []
    real = stage1.objective_heads

    def spy(config, data, *, teacher, **kw):
        seen.append(teacher)
        return real(config, data, teacher=teacher, **kw)

    monkeypatch.setattr(stage1, "objective_heads", spy)
    cfg = DISTILL.replace(teacher="adapted")
    snn = fxsnn.convert(model, data, T=2, method="spatial", config=cfg, progress=False)
    assert "teacher" in snn.meta["fxsnn.convert"]["seconds"]
    want = fxsnn.calibration.reestimate_bn_stats(model, data, progress=False)
    torch.testing.assert_close(seen[0].bn1.running_mean, want.bn1.running_mean)
    assert not torch.equal(seen[0].bn1.running_mean, model.bn1.running_mean)
    assert not changed_keys(before, state(model))
    no_mix = fxsnn.ConvertConfig().override("stage1.distill_weight=0")
    labels = fxsnn.convert(model, tiny_data(), T=2, method="spatial", config=no_mix, progress=False)
    assert "teacher" not in labels.meta["fxsnn.convert"]["seconds"]  # the cross-entropy alone: no teacher


def test_teacher_choice_is_validated():
    with pytest.raises(ConfigError, match="teacher must be one of"):
        fxsnn.ConvertConfig(teacher="ann")


def test_im_loss_is_mean_entropy_minus_the_entropy_of_the_mean_prediction():
    from fxsnn.calibration.distill import im_loss

    C = 4
    assert float(im_loss(torch.zeros(6, C))) == pytest.approx(0.0, abs=1e-6)  # uniform: log C - log C
    confident = 30.0 * torch.eye(C).repeat(2, 1)  # one-hot predictions, every class twice
    assert float(im_loss(confident)) == pytest.approx(-torch.log(torch.tensor(float(C))).item(), abs=1e-5)
    collapsed = 30.0 * torch.eye(C)[[0] * 8]  # confident, all one class: no better than uniform
    assert float(im_loss(collapsed)) == pytest.approx(0.0, abs=1e-5)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, C, generator=g)
    p = z.softmax(1)
    want = -(p * p.log()).sum(1).mean() + (p.mean(0) * p.mean(0).log()).sum()
    torch.testing.assert_close(im_loss(z, torch.zeros(5)), want)
    dense = torch.randn(2, C, 3, 3, generator=g)
    torch.testing.assert_close(im_loss(dense), im_loss(dense.permute(0, 2, 3, 1).reshape(-1, C)))


@pytest.mark.parametrize("form", ["tuple", "tensor"])
def test_im_teacher_tunes_only_bn_affine_terms_lowers_the_im_loss_and_leaves_the_model_untouched(form):
    from fxsnn.calibration import TrainSpec, im_adapted_teacher
    from fxsnn.calibration.distill import im_loss

    model = tiny_model().train()  # the user's mode and flags must survive
    model.linear.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    before = state(model)
    data = tiny_data(targets=False)
    data = [b[0] for b in data] if form == "tensor" else data
    xs = [b if form == "tensor" else b[0] for b in data]
    teacher = im_adapted_teacher(model, data, TrainSpec(steps=30, lr=2e-2, warmup=0), progress=False)
    assert not changed_keys(before, state(model)) and model.training
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    bn = {n for n, m in teacher.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    changed = changed_keys(before, state(teacher))  # γ, β only: not the running statistics, not the weights
    assert changed and all(k.rsplit(".", 1)[0] in bn and k.endswith((".weight", ".bias")) for k in changed), changed
    model.eval()
    with torch.no_grad():
        loss = [sum(float(im_loss(m(x))) for x in xs) for m in (model, teacher)]
    assert loss[1] < loss[0]


def test_im_teacher_refuses_a_model_without_affine_batchnorm_and_one_shot_data():
    from fxsnn.calibration import im_adapted_teacher

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()
    data = [torch.randn(4, 3, 8, 8)]
    with pytest.raises(fxsnn.CalibrationError, match="no BatchNorm with affine terms.*teacher='model'"):
        im_adapted_teacher(net, data, progress=False)
    with pytest.raises(fxsnn.DataError, match="one-shot iterator"):
        im_adapted_teacher(tiny_model(), (x for x in data), progress=False)
    with pytest.raises(fxsnn.DataError, match="single tensor"):
        im_adapted_teacher(tiny_model(), data[0], progress=False)
    with pytest.raises(fxsnn.DataError, match="non-finite|NaN"):
        im_adapted_teacher(tiny_model(), [torch.full((4, 3, 8, 8), float("nan"))], progress=False)


def _spy_teacher(monkeypatch) -> list:
    from fxsnn.calibration import stage1

    seen = []
    real = stage1.objective_heads
    monkeypatch.setattr(
        stage1,
        "objective_heads",
        lambda c, d, *, teacher, **kw: seen.append(teacher) or real(c, d, teacher=teacher, **kw),
    )
    return seen


def test_convert_with_the_im_teacher_distils_from_it_on_input_only_batches(monkeypatch):
    seen = _spy_teacher(monkeypatch)
    model = tiny_model()
    before = state(model)
    data = tiny_data(targets=False)
    snn = fxsnn.convert(model, data, T=2, method="full", config=DISTILL.replace(teacher="im"), progress=False)
    assert "teacher" in snn.meta["fxsnn.convert"]["seconds"] and snn.meta["fxsnn.stage1"].steps > 0
    assert not changed_keys(before, state(model))
    changed = changed_keys(before, state(seen[0]))  # the IM teacher: γ, β moved, BN statistics kept
    assert changed and all(k.endswith((".weight", ".bias")) and "bn" in k for k in changed), changed
    assert DISTILL.teacher == "auto" and DISTILL.teacher_choice("full") == "im"  # the default, label-free


@pytest.mark.parametrize("choice", ["im", "labels"])
def test_a_tuned_teacher_on_batchnorm_without_affine_terms_falls_back_to_the_adapted_one(monkeypatch, choice):
    seen = _spy_teacher(monkeypatch)
    model = tiny_model()
    model.bn1, model.bn2 = torch.nn.BatchNorm2d(6, affine=False).eval(), torch.nn.BatchNorm2d(6, affine=False).eval()
    data = tiny_data(targets=choice == "labels")
    config = DISTILL if choice == "im" else fxsnn.ConvertConfig()  # the default labelled conversion: 'labels'
    with pytest.warns(UserWarning, match=f"teacher='{choice}'.*none.*teacher='adapted'"):
        fxsnn.convert(model, data, T=2, method="spatial", config=config, progress=False)
    want = fxsnn.calibration.reestimate_bn_stats(model, data, progress=False)
    torch.testing.assert_close(seen[-1].bn1.running_mean, want.bn1.running_mean)


def test_im_teacher_reads_the_logits_through_the_users_output(monkeypatch):
    class Dict(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_model()

        def forward(self, x):
            return {"features": x.flatten(1), "logits": self.net(x)}

    seen = _spy_teacher(monkeypatch)
    model = Dict().eval()
    fxsnn.convert(
        model,
        tiny_data(targets=False),
        T=2,
        method="spatial",
        config=DISTILL,
        output=lambda o: o["logits"],
        progress=False,
    )
    assert changed_keys(state(model), state(seen[0]))


def test_the_im_teachers_run_is_set_by_teacher_train(monkeypatch):
    from fxsnn import conversion

    specs = []
    real = conversion.im_adapted_teacher
    monkeypatch.setattr(
        conversion, "im_adapted_teacher", lambda m, d, spec, **kw: specs.append(spec) or real(m, d, spec, **kw)
    )
    cfg = DISTILL.override("teacher_train.steps=2", "teacher_train.lr=0.01")
    fxsnn.convert(tiny_model(), tiny_data(targets=False), T=2, method="spatial", config=cfg, progress=False)
    assert specs == [fxsnn.calibration.TrainSpec(steps=2, lr=0.01)]
    fxsnn.convert(tiny_model(), tiny_data(targets=False), T=2, method="spatial", config=DISTILL, progress=False)
    assert specs[1] == fxsnn.calibration.TrainSpec(epochs=1, lr=1e-3)  # the default
    with pytest.raises(ConfigError, match="teacher_train.*TrainSpec"):
        fxsnn.ConvertConfig(teacher_train={"epochs": 1})


def test_teacher_for_builds_each_choice_as_convert_does():
    from fxsnn.conversion import teacher_for

    model, data = tiny_model(), tiny_data(targets=False)
    spec = fxsnn.ConvertConfig().teacher_train
    assert teacher_for(model, data, "model", spec=spec) is model
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3)).eval()  # no BatchNorm
    assert all(teacher_for(net, data, t, spec=spec) is net for t in fxsnn.config.TEACHERS if t != "auto")
    with pytest.raises(ValueError, match="resolve teacher='auto'"):
        teacher_for(model, data, "auto", spec=spec)
    adapted = teacher_for(model, data, "adapted", spec=spec, progress=False)
    want = fxsnn.calibration.reestimate_bn_stats(model, data, progress=False)
    torch.testing.assert_close(adapted.bn1.running_mean, want.bn1.running_mean)
    im = teacher_for(model, data, "im", spec=spec, progress=False)
    changed = changed_keys(state(model), state(im))
    assert changed and all(k.endswith((".weight", ".bias")) and "bn" in k for k in changed), changed


def test_the_teachers_bn_statistics_take_stage1s_stat_batches(monkeypatch):
    from fxsnn import conversion
    from fxsnn.conversion import teacher_for

    model, data = tiny_model(), tiny_data()  # 6 batches
    head = fxsnn.calibration.reestimate_bn_stats(model, data[:2], progress=False)
    adapted = teacher_for(model, data, "adapted", stat_batches=2, progress=False)
    assert torch.equal(adapted.bn2.running_var, head.bn2.running_var)
    spec = fxsnn.calibration.TrainSpec(steps=1, lr=1e-3)
    labels = teacher_for(model, data, "labels", spec=spec, stat_batches=2, progress=False)
    assert labels.meta["fxsnn.stage1"].batches == 2
    assert teacher_for(model, data, "labels", spec=spec, progress=False).meta["fxsnn.stage1"].batches == 6
    seen, real = [], conversion.teacher_for
    monkeypatch.setattr(
        conversion, "teacher_for", lambda m, d, t, **kw: seen.append(kw["stat_batches"]) or real(m, d, t, **kw)
    )
    for n in (3, None):
        cfg = fxsnn.ConvertConfig().replace(**{"stage1.stat_batches": n, "stage1.train.steps": 1})
        snn = fxsnn.convert(model, data, T=2, method="spatial", config=cfg, progress=False)
        assert snn.meta["fxsnn.convert"]["stages"]["Stage 1"].batches == (n or 6)
    assert seen == [3, None]  # the teacher is built as the student's Stage 1 re-estimates


# ---- the labelled loss with a distillation share (distill_weight α > 0) ----------------------------------------

MIXED = fxsnn.ConvertConfig().override("stage1.distill_weight=0.5")


def test_mixed_loss_is_the_alpha_weighted_sum_of_cross_entropy_and_tempered_kl():
    from fxsnn.calibration.distill import mixed_loss

    g = torch.Generator().manual_seed(0)
    s, t, y = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g), torch.randint(0, 5, (6,), generator=g)
    packed = Distilled.pack(y, t)
    for alpha in (0.0, 0.3, 1.0):
        want = (1 - alpha) * F.cross_entropy(s, y) + alpha * kl_loss(4.0)(s, t)
        torch.testing.assert_close(mixed_loss(alpha, 4.0)(s, packed), want)
    ce = mixed_loss(0.0, 4.0)(s, packed)
    assert float(ce) == float(F.cross_entropy(s, y))  # α = 0: the cross-entropy, to the bit
    users = mixed_loss(0.25, 2.0, lambda z, target: (z.sum(1) * target).mean())  # a user's loss gets int64 y
    torch.testing.assert_close(users(s, packed), 0.75 * (s.sum(1) * y).mean() + 0.25 * kl_loss(2.0)(s, t))


def test_packed_targets_round_trip_exactly_dense_ones_included():
    g = torch.Generator().manual_seed(1)
    y, z = torch.randint(0, 1000, (7,), generator=g), torch.randn(7, 1000, generator=g, dtype=torch.float64)
    y2, z2 = Distilled.unpack(Distilled.pack(y, z))
    assert torch.equal(y2, y) and y2.dtype == torch.int64 and torch.equal(z2, z.float())
    yd, zd = torch.randint(0, 4, (2, 3, 3), generator=g), torch.randn(2, 4, 3, 3, generator=g)
    y3, z3 = Distilled.unpack(Distilled.pack(yd, zd))
    assert torch.equal(y3, yd) and torch.equal(z3, zd)


def test_mixed_data_keeps_the_targets_and_refuses_batches_without_class_indices():
    model = tiny_model()
    data = tiny_data()
    for (x, packed), (xb, yb) in zip(Distilled(data, model, where="test", keep_targets=True), data):
        y, z = Distilled.unpack(packed)
        assert x is xb and torch.equal(y, yb)
        torch.testing.assert_close(z, model(xb))
    for bad, match in (
        (tiny_data(targets=False), "no target tensor.*distill_weight"),
        ([(x, y.float()) for x, y in data], "float32 targets"),
        ([(x, y + 3) for x, y in data], "must lie in"),
    ):
        with pytest.raises(fxsnn.DataError, match=match):
            list(Distilled(bad, model, where="test", keep_targets=True))


def test_distill_weight_is_a_fraction_for_the_labels_objective_only():
    assert Stage1Config(distill_weight=1.0).distill_weight == 1.0
    for bad in (-0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(ConfigError, match="distill_weight"):
            Stage1Config(distill_weight=bad)
    label_free = MIXED.override("stage1.objective=distill")  # the distillation alone: α does not apply
    assert label_free.distils("full") and label_free.teacher_choice("full") == "im"
    no_mix = fxsnn.ConvertConfig().override("stage1.distill_weight=0")
    assert not no_mix.distils("full") and MIXED.distils("full") and not MIXED.distils("temporal")
    assert MIXED.teacher_choice("full") == "labels" and MIXED.teacher_choice("temporal") == "im"
    assert MIXED.replace(teacher="im").teacher_choice("full") == "im"


def test_recalibrate_bn_with_distill_weight_needs_a_teacher():
    with pytest.raises(fxsnn.CalibrationError, match="distill_weight > 0 needs the ANN.*distill_weight=0"):
        fxsnn.recalibrate_bn(tiny_da(), tiny_data(), distill_weight=0.5, progress=False)


def test_convert_mixing_distillation_builds_the_labelled_teacher_and_leaves_the_model_untouched(monkeypatch):
    seen = _spy_teacher(monkeypatch)
    model = tiny_model()
    model.conv1.weight.requires_grad_(False)  # the user's flags, kept
    before, flags = state(model), [p.requires_grad for p in model.parameters()]
    data = tiny_data()
    snn = fxsnn.convert(model, data, T=2, method="full", config=MIXED, progress=False)
    assert not changed_keys(before, state(model)) and not model.training
    assert [p.requires_grad for p in model.parameters()] == flags and all(p.grad is None for p in model.parameters())
    assert "teacher" in snn.meta["fxsnn.convert"]["seconds"] and snn.meta["fxsnn.stage1"].steps > 0
    teacher = seen[-1]  # the labels teacher is itself built by Stage 1 (no teacher), then Stage 1 distils from it
    assert seen[0] is None and isinstance(teacher, torch.nn.Module)
    want = fxsnn.recalibrate_bn(model, data, train_weights=False, epochs=1, progress=False)
    assert torch.equal(state(teacher)["bn1.weight"], state(want)["bn1.weight"])  # Stage 1 on the ANN, BN only
    assert torch.equal(state(teacher)["conv1.weight"], before["conv1.weight"])
    assert not torch.equal(state(teacher)["bn1.weight"], before["bn1.weight"])
    with pytest.raises(fxsnn.DataError, match="needs targets"):
        fxsnn.convert(model, tiny_data(targets=False), T=2, method="full", config=MIXED, progress=False)


def test_convert_builds_the_labels_teacher_by_default_and_none_without_distillation(monkeypatch):
    from fxsnn import conversion

    assert fxsnn.ConvertConfig().stage1.distill_weight == fxsnn.config.DISTILL_WEIGHT == 0.5
    assert Stage1Config().distill_weight == 0  # a direct recalibrate_bn call has no teacher unless given one
    choices, real = [], conversion.teacher_for
    monkeypatch.setattr(conversion, "teacher_for", lambda m, d, t, **kw: choices.append(t) or real(m, d, t, **kw))
    snn = fxsnn.convert(tiny_model(), tiny_data(), T=2, method="full", progress=False)
    assert choices == ["labels"] and "teacher" in snn.meta["fxsnn.convert"]["seconds"]
    stages = snn.meta["fxsnn.convert"]["stages"]  # the report says which stage distilled, from what
    assert stages["Stage 1"].note.startswith("0.5 of the loss distilled from teacher 'labels', built in ")
    assert "teacher" not in (stages["Stage 2"].note or "")
    snn = fxsnn.convert(tiny_model(), tiny_data(targets=False), T=2, method="full", config=DISTILL, progress=False)
    assert choices == ["labels", "im"]  # label-free: the IM teacher
    stages = snn.meta["fxsnn.convert"]["stages"]
    assert "distilled from teacher 'im', built in" in stages["Stage 1"].note
    assert stages["Stage 2"].note == "distilled from teacher 'im'"  # built once, said once
    cfg = fxsnn.ConvertConfig().override("stage1.distill_weight=0")
    snn = fxsnn.convert(tiny_model(), tiny_data(), T=2, method="full", config=cfg, progress=False)
    assert "teacher" not in snn.meta["fxsnn.convert"]["seconds"]


@pytest.mark.parametrize("objective", [{"objective": "distill"}, {"distill_weight": 0.5}])
def test_an_explicit_holdout_is_scored_with_the_stages_own_loss(objective):
    """Held-out batches given as ``(x, y)`` are paired with the teacher's logits as the training batches are."""
    from fxsnn.calibration.distill import mixed_loss

    data, held, teacher = tiny_data(), tiny_data(n=32, seed=5), tiny_model()
    kw = dict(teacher=teacher, progress=False, holdout=held, patience=2, **objective)
    out = fxsnn.recalibrate_bn(tiny_da(), data, **kw).meta["fxsnn.stage1"]
    loss = kl_loss(4.0) if "objective" in objective else mixed_loss(0.5, 4.0)
    start = fxsnn.calibration.reestimate_bn_stats(tiny_da(), data, progress=False)  # Stage 1 before its first step
    with torch.no_grad():
        target = [teacher(x) if "objective" in objective else Distilled.pack(y, teacher(x)) for x, y in held]
        want = sum(len(x) * float(loss(start(x), t)) for (x, _), t in zip(held, target)) / 32
    assert out.holdout[0][0] == 0 and out.holdout[0][1] == pytest.approx(want, rel=1e-5)
    snn = fxsnn.passes.lower_to_paraif(tiny_da(), T=4)
    out2 = fxsnn.tune_delta_b(snn, data, **kw).meta["fxsnn.stage2"]
    assert out2.holdout and all(h == h for _, h in out2.holdout)  # scored, and finite (no NaN)


def test_a_users_loss_gets_the_targets_as_they_are_an_ignore_index_included():
    seen = []

    def loss_fn(z, y):
        seen.append(y)
        return F.cross_entropy(z, y, ignore_index=255)

    data = [(x, torch.where(y == 0, 255, y)) for x, y in tiny_data()]  # class 0 ignored
    fxsnn.convert(tiny_model(), data, T=2, method="spatial", loss_fn=loss_fn, progress=False)
    assert seen and all(y.dtype == torch.int64 for y in seen) and any((y == 255).any() for y in seen)
    soft = [
        (x, F.one_hot(y, 3).float()) for x, y in tiny_data()
    ]  # probabilities: the user's loss takes them, the packing not
    with pytest.raises(fxsnn.DataError, match="distill_weight > 0 carries the targets.*distill_weight=0"):
        fxsnn.convert(tiny_model(), soft, T=2, method="spatial", loss_fn=F.cross_entropy, progress=False)
    cfg = fxsnn.ConvertConfig().override("stage1.distill_weight=0")  # the fix the message names
    fxsnn.convert(tiny_model(), soft, T=2, method="spatial", config=cfg, loss_fn=F.cross_entropy, progress=False)


def test_the_labels_teacher_on_images_without_labels_says_what_to_set():
    with pytest.raises(fxsnn.DataError, match="teacher='labels'.*needs targets.*stage1.objective=distill"):
        fxsnn.convert(tiny_model(), tiny_data(targets=False), T=2, method="full", progress=False)
