"""No silent hybrids (issue 10 item 8, issue 9 item 6): nonlinear ops that do not become spiking sites are refused
with their list, or kept analog on request (allow_analog=True / --allow-analog) and shown everywhere."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import gelu_net
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

import fxsnn
from fxsnn import cli
from fxsnn.graph.sites import ALLOWED_KEY, MAXPOOL_ON_INPUT, MAXPOOL_ON_SPIKES, find_hybrid_ops
from fxsnn.io.archive import write_archive
from fxsnn.nn import QCFS
from fxsnn.report.energy import synaptic_inputs

P = fxsnn.passes
CFG = fxsnn.ConvertConfig().override("stage1.epochs=1", "stage2.train.holdout=None", "stage2.train.epochs=1")


class Untouchable:
    """Re-iterable data that fails the test if anything iterates it."""

    def __len__(self):
        return 2

    def __iter__(self):
        raise AssertionError("the data was touched before the network was checked")


class Mixed(nn.Module):
    """One ReLU site, then GELU, LeakyReLU, a Sigmoid gate and a Softmax (all analog)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.gelu = nn.GELU()
        self.leaky = nn.LeakyReLU(0.1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x)))
        h = self.leaky(self.gelu(self.conv2(h)))
        h = h * torch.sigmoid(h)
        return F.softmax(self.fc(h.mean((2, 3))), dim=1)


def _data(shape=(3, 6, 6), n=2, batch=4, classes=3):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(batch, *shape, generator=g), torch.randint(0, classes, (batch,), generator=g)) for _ in range(n)
    ]


MIXED_OPS = [
    ("GELU", "gelu", "gelu"),
    ("LeakyReLU", "leaky", "leaky"),
    ("Sigmoid", "sigmoid", ""),
    ("Softmax", "softmax", ""),
]


def test_convert_refuses_a_hybrid_before_touching_data_listing_kind_node_path_and_counts():
    with pytest.raises(fxsnn.ConversionError) as info:
        fxsnn.convert(Mixed().eval(), Untouchable(), T=2, progress=False)
    msg = str(info.value)
    assert msg.startswith("fxsnn.convert: 4 nonlinear op(s) would not become spiking neurons")
    assert "(1 × GELU, 1 × LeakyReLU, 1 × Sigmoid, 1 × Softmax)" in msg
    lines = msg.splitlines()
    for kind, node, path in MIXED_OPS:  # one table row per op: node, kind, module path
        assert any(line.split() == [node, kind, path or "(top", "level)"][: 3 if path else 4] for line in lines), node
    assert "allow_analog=True" in msg and "--allow-analog" in msg and "replace these ops" in msg


@pytest.mark.parametrize("method", ["fspc", "full"])
def test_allow_analog_converts_a_marked_hybrid_shown_by_find_sites_summary_and_meta(method):
    model = Mixed().eval()
    snn = fxsnn.convert(model, _data(), T=2, method=method, config=CFG, progress=False, allow_analog=True)
    meta = snn.meta["fxsnn.convert"]
    assert meta["hybrid"] is True
    assert [(d["kind"], d["node"], d["path"]) for d in meta["analog"]] == MIXED_OPS
    sites = fxsnn.find_sites(snn)
    assert [(o.kind, o.node, o.path) for o in sites.hybrid] == MIXED_OPS
    text = str(sites)
    assert "HYBRID network: 4 nonlinear op(s) stay analog" in text and "LeakyReLU" in text and "(top level)" in text
    s = fxsnn.summary(snn)
    assert "HYBRID network" in str(s) and s.to_dict()["totals"]["hybrid"] is True
    assert [op["kind"] for op in s.to_dict()["analog"]] == [k for k, _, _ in MIXED_OPS]
    assert snn(_data()[0][0]).shape == (4, 3)


def test_a_pure_network_says_nothing_about_hybrids():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()).eval()
    snn = fxsnn.convert(model, _data(), T=2, method="fspc", progress=False)
    assert snn.meta["fxsnn.convert"]["hybrid"] is False and snn.meta["fxsnn.convert"]["analog"] == []
    assert "HYBRID" not in str(fxsnn.find_sites(snn)) and "HYBRID" not in str(fxsnn.summary(snn))
    assert fxsnn.summary(snn).to_dict()["totals"]["hybrid"] is False


def test_every_site_changing_pass_refuses_unmarked_analog_ops_and_the_opt_in_travels_with_the_graph():
    model = Mixed().eval()
    with pytest.raises(fxsnn.ConversionError, match=r"^fxsnn.passes.insert_recorders: 4 nonlinear op\(s\)"):
        P.insert_recorders(fxsnn.trace(model))
    rec = P.insert_recorders(fxsnn.trace(model), allow_analog=True)
    assert sum(bool(n.meta.get(ALLOWED_KEY)) for n in rec.graph.nodes) == 4
    rec = fxsnn.calibrate(rec, _data(), progress=False)
    snn = P.lower_to_paraif(P.to_da_qcfs(rec, levels=2), T=2)  # marked: no second opt-in needed
    assert len(find_hybrid_ops(snn)) == 4
    x = _data()[0][0]
    hand = nn.Sequential(nn.Linear(3, 4), QCFS(torch.ones(4), 2), nn.Tanh(), nn.Linear(4, 2))  # no recorders
    traced = fxsnn.trace(hand, leaf_modules=[QCFS])
    for pass_, kw in ((P.to_qcfs, {"levels": 2}), (P.to_da_qcfs, {"levels": 2}), (P.lower_to_paraif, {"T": 2})):
        with pytest.raises(fxsnn.ConversionError, match=r"1 nonlinear op\(s\).*1 × Tanh"):
            pass_(traced, **kw)
        assert len(find_hybrid_ops(pass_(traced, allow_analog=True, **kw))) == 1
    with pytest.raises(TypeError, match="allow_analog must be True or False"):
        P.insert_recorders(fxsnn.trace(model), allow_analog="yes")
    assert x.shape == (4, 3, 6, 6)


@pytest.mark.parametrize(
    "model, named",
    [
        (nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2)), "1 × GELU"),
        (nn.Sequential(nn.Linear(3, 4), nn.SiLU(), nn.Linear(4, 4), nn.SiLU()), "2 × SiLU"),
    ],
)
def test_a_model_without_relu_sites_is_told_what_it_has(model, named):
    for call in (
        lambda: fxsnn.convert(model, Untouchable(), T=2, progress=False),
        lambda: P.insert_recorders(fxsnn.trace(model)),
        lambda: fxsnn.convert(model, Untouchable(), T=2, progress=False, allow_analog=True),
    ):
        with pytest.raises(fxsnn.ConversionError) as info:
            call()
        msg = str(info.value)
        assert "no ReLU activation site" in msg and named in msg and "node '" in msg and "Replace them" in msg


class PoolNet(nn.Module):
    """A MaxPool of the input (before any neuron) and one of a neuron's outputs: both exact, neither refused."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = F.relu(F.max_pool2d(self.conv1(x), 2))  # LeNet's stem
        h = F.max_pool2d(F.relu(self.conv2(h)), 3)
        return self.fc(torch.flatten(h, 1))


def test_max_pools_after_a_neuron_or_on_the_input_are_no_hybrid_and_rate_mode_stays_exact():
    model, data = PoolNet().eval(), _data()
    gm = fxsnn.trace(model)
    assert [o.kind for o in fxsnn.graph.find_analog_ops(gm)] == [MAXPOOL_ON_INPUT, MAXPOOL_ON_SPIKES]
    assert find_hybrid_ops(gm) == ()
    snn = fxsnn.convert(model, data, T=2, method="fspc", progress=False)
    assert snn.meta["fxsnn.convert"]["hybrid"] is False
    q = P.to_qcfs(fxsnn.calibrate(P.insert_recorders(gm), data, progress=False), levels=2)
    rate = P.lower_to_paraif(q, T=2, mode="rate")
    assert torch.equal(rate(data[0][0]), q(data[0][0]))


def test_torchvision_models_with_other_activations_are_refused_with_their_list_or_told_what_they_have():
    tv = pytest.importorskip("torchvision")
    with pytest.raises(fxsnn.ConversionError) as info:
        fxsnn.convert(tv.models.mobilenet_v3_small(num_classes=4).eval(), Untouchable(), T=2, progress=False)
    msg = str(info.value)
    assert "28 nonlinear op(s)" in msg and "19 × Hardswish" in msg and "9 × Hardsigmoid" in msg
    assert any(line.split() == ["features_0_2", "Hardswish", "features.0.2"] for line in msg.splitlines())
    with pytest.raises(fxsnn.ConversionError, match=r"no ReLU activation site.*49 × SiLU, 16 × Sigmoid"):
        fxsnn.convert(tv.models.efficientnet_b0(num_classes=4).eval(), Untouchable(), T=2, progress=False)


def test_mobilenet_v3_small_converts_as_a_marked_hybrid():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = tv.models.mobilenet_v3_small(num_classes=4).eval()
    data = _data((3, 32, 32), n=1, batch=2, classes=4)
    snn = fxsnn.convert(model, data, T=2, method="fspc", progress=False, allow_analog=True)
    counts = fxsnn.find_sites(snn).hybrid.counts()
    assert counts == {"Hardswish": 19, "Hardsigmoid": 9} and len(fxsnn.find_sites(snn)) == 14
    assert "HYBRID network: 28 nonlinear op(s)" in str(fxsnn.summary(snn))
    with torch.no_grad():
        assert torch.isfinite(snn(data[0][0])).all()


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4, 3)

    def forward(self, x):
        h = F.relu(self.conv(x))
        return self.fc((h * torch.sigmoid(h)).mean((2, 3)))  # spikes times an analog gate: no spikes


def test_a_layer_fed_through_an_analog_op_counts_as_macs():
    data = _data((1, 8, 8))
    snn = fxsnn.convert(Gated().eval(), data, T=2, method="fspc", progress=False, allow_analog=True)
    assert synaptic_inputs(snn) == {"conv": ((), True), "fc": (("relu",), True)}
    pure = fxsnn.convert(
        nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)),
        data,
        T=2,
        method="fspc",
        progress=False,
    )
    assert synaptic_inputs(pure)["3"] == (("1",), False)


def test_analyze_marks_the_hybrid_and_its_json():
    model, data = gelu_net(), _data((1, 8, 8))
    snn = fxsnn.convert(model, data, T=2, method="fspc", progress=False, allow_analog=True)
    rep = fxsnn.analyze(model, snn, data, progress=False)
    d = rep.to_dict()
    assert d["totals"]["hybrid"] is True and [op["kind"] for op in d["analog"]] == ["GELU", "Sigmoid"]
    assert str(rep).startswith("HYBRID network: 2 nonlinear op(s)") and "runs as MACs" in str(rep)
    assert {r.layer: r.input for r in rep.energy}["fc"] == "analog"


def test_save_and_load_a_hybrid_and_refuse_a_forged_record(tmp_path):
    model, data = gelu_net(), _data((1, 8, 8))
    snn = fxsnn.convert(model, data, T=2, method="fspc", progress=False, allow_analog=True)
    path = tmp_path / "h.fxsnn"
    fxsnn.save(snn, path)
    header = fxsnn.io.read_header(path)
    assert header["hybrid"] is True and [op["kind"] for op in header["analog"]] == ["GELU", "Sigmoid"]
    assert header["conversion"]["hybrid"] is True and len(header["conversion"]["analog"]) == 2
    back = fxsnn.load(path, model=model)
    x = data[0][0]
    assert torch.equal(back(x), snn(x)) and len(find_hybrid_ops(back)) == 2
    for key, value, why in (
        ("hybrid", False, "would not become spiking neurons"),
        ("analog", [], "the file records 0 analog ops"),
        ("hybrid", "yes", "hybrid must be true or false"),
    ):
        with zipfile.ZipFile(path) as zf:
            h, t = json.loads(zf.read("fxsnn.json")), load_tensors(zf.read("tensors.safetensors"))
        h[key] = value
        forged = tmp_path / f"forged-{key}.fxsnn"
        write_archive(str(forged), {k: v for k, v in h.items() if k not in ("sha256", "bytes")}, save_tensors(t))
        with pytest.raises(fxsnn.io.SaveFileError, match=why):
            fxsnn.load(forged, model=model)


def test_cli_refuses_a_hybrid_converts_it_with_allow_analog_and_every_printout_says_so(tmp_path, capsys):
    g = np.random.RandomState(0)
    np.savez(tmp_path / "d.npz", x=g.randn(8, 1, 8, 8).astype("float32"), y=g.randint(0, 3, 8))
    out = tmp_path / "h.fxsnn"
    base = ["convert", "--model", "helpers:gelu_net", "--data", str(tmp_path / "d.npz"), "--T", "2"]
    base += ["--method", "fspc", "--out", str(out)]
    assert cli.main(base) == 1
    err = capsys.readouterr().err
    assert "2 nonlinear op(s)" in err and "1 × GELU, 1 × Sigmoid" in err and "--allow-analog" in err
    assert not out.exists()
    assert cli.main(base + ["--allow-analog"]) == 0
    printed = capsys.readouterr().out
    assert "HYBRID network: 2 nonlinear op(s)" in printed and "act      GELU     act" in printed
    assert cli.main(["inspect", str(out), "--no-graph"]) == 0
    printed = capsys.readouterr().out
    assert "hybrid=True" in printed and "HYBRID network" in printed and "sigmoid  Sigmoid  (top level)" in printed
    spec = ["--snn", str(out), "--model", "helpers:gelu_net", "--data", str(tmp_path / "d.npz")]
    assert cli.main(["eval", *spec]) == 0
    assert "HYBRID network: 2 nonlinear op(s)" in capsys.readouterr().out
    assert cli.main(["analyze", *spec, "--json", str(tmp_path / "a.json")]) == 0
    assert "HYBRID network" in capsys.readouterr().out
    rep = json.loads((tmp_path / "a.json").read_text())
    assert rep["totals"]["hybrid"] is True and [op["node"] for op in rep["analog"]] == ["act", "sigmoid"]
