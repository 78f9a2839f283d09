"""Site decisions in node.meta: records, their journey through every stage, the analog inventory, printouts."""

import contextlib
import io

import torch
import torch.nn.functional as F
from torch import nn

import fxsnn
from fxsnn.graph.sites import (
    ANALOG_KEY,
    MAXPOOL_ON_SPIKES,
    SITE_KEY,
    AnalogOp,
    SiteRecord,
    annotate_sites_,
    find_analog_ops,
    print_tabular,
)


class Res(nn.Module):
    """conv→bn→relu, a residual add→relu, a linear→relu."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x)))
        h = (self.conv2(h) + h).relu()
        h = torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)
        return self.head(torch.relu(self.fc(h)))


X = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(0))


def _records(gm):
    return {
        n.target if n.op == "call_module" else n.name: n.meta[SITE_KEY] for n in gm.graph.nodes if SITE_KEY in n.meta
    }


def test_annotation_records_pattern_producers_channels_and_axis():
    gm = fxsnn.passes.normalize(fxsnn.trace(Res().eval()))
    recs = _records(gm)
    assert list(recs) == ["relu", "relu_1", "relu_2"]
    assert recs["relu"] == SiteRecord("conv→bn→relu", ("conv", "bn"), ("conv", "bn"), 4, 1)
    assert recs["relu_1"] == SiteRecord("add→relu", (), (), 4, 1)
    assert recs["relu_2"] == SiteRecord("linear→relu", ("fc",), ("fc",), 5, -1)
    site = fxsnn.find_sites(gm)[2]
    assert (site.pattern, site.producers, site.producer_nodes, site.channels, site.channel_axis) == (
        "linear→relu",
        ("fc",),
        ("fc",),
        5,
        -1,
    )


def test_channel_axis_is_minus_one_for_a_token_linear_and_one_for_a_conv():
    tokens = fxsnn.find_sites(fxsnn.trace(nn.Sequential(nn.Linear(8, 16), nn.ReLU())))  # [B, N, 8] -> [B, N, 16]
    assert (tokens[0].channels, tokens[0].channel_axis) == (16, -1)
    conv = fxsnn.find_sites(fxsnn.trace(nn.Sequential(nn.Conv1d(2, 3, 1), nn.ReLU())))
    assert (conv[0].channels, conv[0].channel_axis) == (3, 1)


def test_records_are_copied_through_every_stage_to_the_lowered_network():
    model = Res().eval()
    rec = fxsnn.passes.insert_recorders(fxsnn.trace(model))
    first = _records(rec)
    assert len(first) == 3 and all(isinstance(r, SiteRecord) for r in first.values())
    rec = fxsnn.calibrate(rec, [X], progress=False)
    q = fxsnn.passes.to_qcfs(rec, levels=4)
    da = fxsnn.calibrate_da(fxsnn.passes.to_da_qcfs(rec, levels=4), [X], progress=False)
    for gm in (q, da, fxsnn.passes.lower_to_paraif(q, T=4), fxsnn.passes.lower_to_paraif(da, T=4, mode="rate")):
        assert _records(gm) == first
    assert {s.kind for s in fxsnn.find_sites(fxsnn.passes.lower_to_paraif(da, T=4))} == {"ParallelIF"}


def test_find_sites_annotates_a_graph_that_has_no_records_yet_and_reads_them_after():
    gm = fxsnn.trace(Res())
    assert not any(SITE_KEY in n.meta for n in gm.graph.nodes)
    sites = fxsnn.find_sites(gm)
    assert [s.pattern for s in sites] == ["conv→bn→relu", "add→relu", "linear→relu"]
    assert sum(SITE_KEY in n.meta for n in gm.graph.nodes) == 3


class Hybrid(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.GELU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.pool(F.relu(self.conv(x)))  # MaxPool after a neuron: exact in rate mode
        h = F.relu(F.max_pool2d(self.conv2(h), 1))  # MaxPool of analog values
        h = F.hardtanh(self.act(h)) * torch.sigmoid(h)  # Hardtanh(-1, 1): not a clipped ReLU, stays analog
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1).tanh())


def test_inventory_lists_every_other_nonlinear_op_with_kind_node_and_module_path():
    gm = fxsnn.trace(Hybrid())
    ops = find_analog_ops(gm)
    assert [(o.kind, o.node, o.path) for o in ops] == [
        (MAXPOOL_ON_SPIKES, "pool", "pool"),
        ("MaxPool", "max_pool2d", ""),
        ("GELU", "act", "act"),
        ("Hardtanh", "hardtanh", ""),
        ("Sigmoid", "sigmoid", ""),
        ("Tanh", "tanh", ""),
    ]
    assert all(isinstance(n.meta[ANALOG_KEY], AnalogOp) for n in gm.graph.nodes if n.name in {o.node for o in ops})
    assert "GELU" in str(ops) and "module" in str(ops)  # prints as a table


def test_inventory_survives_conversion_and_summary_says_what_is_not_spiking():
    x = torch.randn(4, 3, 8, 8)
    hybrid = fxsnn.passes.insert_recorders(fxsnn.trace(Hybrid().eval()), allow_analog=True)  # refused without it
    rec = fxsnn.calibrate(hybrid, [x], progress=False)
    snn = fxsnn.passes.lower_to_paraif(fxsnn.passes.to_qcfs(rec, levels=2), T=2)
    assert [o.kind for o in find_analog_ops(snn)] == [o.kind for o in find_analog_ops(fxsnn.trace(Hybrid()))]
    s = fxsnn.summary(snn)
    line = s.not_spiking()
    assert line.startswith("not spiking (analog): ") and "1 × GELU" in line and f"1 × {MAXPOOL_ON_SPIKES}" in line
    assert line in str(s) and s.to_dict()["analog"][2] == {"kind": "GELU", "node": "act", "path": "act"}
    assert fxsnn.summary(fxsnn.trace(Res())).not_spiking() == ""


def test_a_leaf_module_of_a_user_class_is_inventoried_as_opaque():
    class Block(nn.Module):
        def forward(self, x):
            return torch.relu(x) * 2

    gm = fxsnn.trace(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), Block()), leaf_modules=[Block])
    assert [(o.kind, o.path) for o in find_analog_ops(gm)] == [("opaque module", "2")]


def test_print_readable_and_print_tabular_show_the_decisions():
    gm = fxsnn.passes.insert_recorders(fxsnn.trace(Hybrid()), allow_analog=True)
    text = gm.print_readable(print_output=False)
    assert "'fxsnn': 'site conv→relu C=4 axis=1'" in text and "'fxsnn': 'analog GELU'" in text
    assert f"'fxsnn': 'analog {MAXPOOL_ON_SPIKES}'" in text
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        table = print_tabular(gm)
    assert table == buf.getvalue().rstrip("\n")
    header = table.splitlines()[0].split()
    assert header == ["opcode", "name", "target", "args", "kwargs", "fxsnn"]
    assert "site conv→relu C=4 axis=1" in table and "analog Hardtanh" in table
    assert "fxsnn" not in gm.code  # the generated code itself is unchanged


def test_annotation_is_metadata_only_and_refresh_recomputes():
    gm = fxsnn.trace(Res())
    code, out = gm.code, gm(X)
    assert annotate_sites_(gm) is gm and gm.code == code and torch.equal(gm(X), out)
    relu = next(n for n in gm.graph.nodes if SITE_KEY in n.meta)
    relu.meta[SITE_KEY] = SiteRecord("stale", (), (), None, 1)
    assert annotate_sites_(gm) and relu.meta[SITE_KEY].pattern == "stale"  # existing records are kept
    assert annotate_sites_(gm, refresh=True) and relu.meta[SITE_KEY].pattern == "conv→bn→relu"
