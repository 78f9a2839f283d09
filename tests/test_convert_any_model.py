"""Models nobody here wrote (issue 10, items 3-6): no BatchNorm, dict outputs, escape hatches, [B, N, C] sites."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import fxsnn
from fxsnn.calibration.measure import pick_output
from fxsnn.errors import DataError, TraceError

CFG = fxsnn.ConvertConfig().override("stage1.epochs=1", "stage2.train.holdout=None")


def _data(shape, classes=3, n=2, batch=4, target_shape=()):
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(batch, *shape, generator=g), torch.randint(0, classes, (batch, *target_shape), generator=g))
        for _ in range(n)
    ]


def _no_bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 3)).eval()


@pytest.mark.parametrize("method", ["full", "spatial"])
def test_a_model_without_batchnorm_skips_stage1_says_why_and_records_it(method):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        snn = fxsnn.convert(_no_bn_net(), _data((3, 4, 4)), T=2, method=method, config=CFG, progress=False)
    said = [str(w.message) for w in caught if "Stage 1" in str(w.message)]
    assert len(said) == 1 and "no BatchNorm layer" in said[0] and f"method={method!r}" in said[0]
    meta = snn.meta["fxsnn.convert"]
    assert meta["skipped"] == {"stage1": "the model has no BatchNorm layer"} and "stage1" not in meta["seconds"]
    assert ("stage2" in meta["seconds"]) == (method == "full")


class Seg(nn.Module):
    """A dense head returning torchvision's segmentation dict: {"out": [B, 3, H, W], "aux": ...}."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        y = self.head(F.relu(self.bn(self.conv(x))))
        return {"out": F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False), "aux": y}


def test_dict_outputs_and_dense_logits_convert_and_evaluate_per_pixel():
    torch.manual_seed(0)
    data = _data((3, 6, 6), batch=2, target_shape=(6, 6))
    snn = fxsnn.convert(Seg().eval(), data, T=2, config=CFG.override("output_mode=auto"), progress=False)
    assert fxsnn.modes.get_mode(snn) == "rate"  # x.shape and bilinear interpolation block nothing
    res = fxsnn.evaluate(snn, data, progress=False)
    assert res.samples == 2 * 2 * 36 and 0.0 <= res.top1 <= 1.0
    with torch.no_grad():
        logits = torch.cat([snn(x)["out"] for x, _ in data])
    y = torch.cat([t for _, t in data])
    assert res.top1 == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert res.loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)


def test_loss_fn_and_output_adaptor_reach_every_stage_and_evaluate():
    calls = {"loss": 0, "output": 0}

    def output(o):
        calls["output"] += 1
        return o["aux"].mean((2, 3))

    def loss_fn(logits, target):
        calls["loss"] += 1
        return F.cross_entropy(logits, target)

    data = _data((3, 6, 6), batch=2)
    no_mix = CFG.override("stage1.distill_weight=0")  # the student's logits only: one output call per loss
    fxsnn.convert(Seg().eval(), data, T=2, config=no_mix, progress=False, loss_fn=loss_fn, output=output)
    assert calls["loss"] >= 4 and calls["output"] == calls["loss"]  # Stage 1 and Stage 2 steps
    calls.update(loss=0, output=0)  # the default mix: output also picks the labels teacher's logits
    fxsnn.convert(Seg().eval(), data, T=2, config=CFG, progress=False, loss_fn=loss_fn, output=output)
    steps = 3 * 2  # one epoch (2 batches) each: the labels teacher, Stage 1 (CFG) and Stage 2 (no holdout)
    assert calls["loss"] >= steps and calls["output"] > calls["loss"]
    calls.update(loss=0, output=0)
    res = fxsnn.evaluate(Seg().eval(), data, progress=False, loss_fn=loss_fn, output=output)
    assert res.samples == 4 and calls["output"] == calls["loss"]
    with pytest.raises(TypeError, match="loss_fn"):
        fxsnn.evaluate(Seg().eval(), data, progress=False, loss_fn="ce")


def test_default_output_adaptor():
    t = torch.zeros(2, 3)
    assert pick_output(t) is t and pick_output({"out": t, "aux": 1}) is t and pick_output({"logits": t}) is t
    assert pick_output((t, 0)) is t and pick_output([(t,)]) is t
    with pytest.raises(DataError, match=r"keys \['a', 'b'\].*output="):
        pick_output({"a": t, "b": t})


class Branchy(nn.Module):
    """A block with data-dependent control flow (untraceable) and a forward flag needing concrete_args."""

    class Block(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.block = Branchy.Block()
        self.fc = nn.Linear(4, 3)

    def forward(self, x, pool: bool = True):
        h = self.block(F.relu(self.conv(x)))
        if pool:
            h = h.mean((2, 3))
        return self.fc(h)


def test_convert_takes_leaf_modules_and_concrete_args():
    data = _data((3, 4, 4))
    with pytest.raises(TraceError, match="leaf_modules"):
        fxsnn.convert(Branchy().eval(), data, T=2, method="fspc", progress=False)
    snn = fxsnn.convert(
        Branchy().eval(),
        data,
        T=2,
        method="fspc",
        progress=False,
        leaf_modules=["block"],
        concrete_args={"pool": True},
        allow_analog=True,  # the opaque leaf stays analog: a hybrid
    )
    assert [s.name for s in fxsnn.find_sites(snn)] == ["relu"]
    assert any(n.op == "call_module" and n.target == "block" for n in snn.graph.nodes)


def test_the_labels_teacher_is_traced_with_the_users_leaf_modules_and_concrete_args():
    class BranchyBN(Branchy):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(4).eval()

        def forward(self, x, pool: bool = True):
            h = self.block(F.relu(self.bn(self.conv(x))))
            return self.fc(h.mean((2, 3)) if pool else h)

    kw = dict(leaf_modules=["block"], concrete_args={"pool": True}, allow_analog=True, progress=False)
    snn = fxsnn.convert(BranchyBN().eval(), _data((3, 4, 4)), T=2, config=CFG, **kw)  # Stage 1 distils (α = 0.5)
    assert "teacher" in snn.meta["fxsnn.convert"]["seconds"] and snn.meta["fxsnn.stage1"].steps > 0


def test_a_graph_module_the_user_traced_is_copied_not_traced_again():
    class Tracer(fx.Tracer):
        def is_leaf_module(self, m, name):
            return isinstance(m, Branchy.Block) or super().is_leaf_module(m, name)

    model = Branchy().eval()
    gm = fx.GraphModule(model, Tracer().trace(model, concrete_args={"pool": True}))
    copy = fxsnn.trace(gm)
    assert copy is not gm and copy.code == gm.code and copy.block is not gm.block
    snn = fxsnn.convert(gm, _data((3, 4, 4)), T=2, method="fspc_da", progress=False, allow_analog=True)
    assert len(fxsnn.find_sites(snn)) == 1
    with pytest.raises(ValueError, match="already traced"):
        fxsnn.trace(gm, leaf_modules=["block"])


class FeedForward(nn.Module):
    """A transformer feed-forward block on [B, N, C] tokens: Linear → ReLU → Linear, mean over tokens."""

    def __init__(self):
        super().__init__()
        self.up = nn.Linear(6, 8)
        self.down = nn.Linear(8, 3)

    def forward(self, x):
        return self.down(F.relu(self.up(x))).mean(1)


def test_a_relu_on_tokens_calibrates_per_last_axis_and_converts():
    torch.manual_seed(0)
    data = _data((5, 6))
    rec = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(FeedForward().eval())), data, progress=False)
    (site,) = fxsnn.find_sites(rec)
    assert site.channel_axis == -1 and site.channels == 8
    with torch.no_grad():
        pre = torch.cat([rec.up(x) for x, _ in data]).reshape(-1, 8)
    assert torch.equal(rec.relu.max_val, pre.amax(0))
    qcfs = fxsnn.passes.to_qcfs(rec, levels=4)
    snn = fxsnn.passes.lower_to_paraif(qcfs, T=4, mode="rate")
    x = data[0][0]
    with torch.no_grad():
        assert torch.equal(snn(x), qcfs(x))
        fxsnn.set_mode(snn, "spike")
        assert torch.allclose(snn(x), qcfs(x), atol=1e-5)
    full = fxsnn.convert(FeedForward().eval(), data, T=2, config=CFG, progress=False)
    assert fxsnn.find_sites(full)[0].channel_axis == -1
