"""fxsnn.summary and fxsnn.analyze: values checked against brute-force references, and every bad input."""

import csv
import io
import json

import numpy as np
import pytest
import torch
from helpers import batches, convert, dead_recorder, fanout_net, tiny_resnet
from scipy.stats import wasserstein_distance
from torch import nn

import fxsnn
from fxsnn.report.energy import EnergyModel, layer_macs
from fxsnn.report.probes import spike_counts


@pytest.fixture(scope="module")
def tiny():
    model, data = tiny_resnet(), batches()
    return model, data, convert(model, data, T=4)


# -- summary --------------------------------------------------------------------------------
def test_summary_at_every_stage(tiny):
    model, data, snn = tiny
    raw = fxsnn.summary(model)
    assert raw.stage == "ReLU" and len(raw) == 2 and all(r.theta is None for r in raw)
    rec = fxsnn.passes.insert_recorders(fxsnn.trace(model))
    assert fxsnn.summary(rec).stage == "recorder" and all(r.theta is None for r in fxsnn.summary(rec))
    rec = fxsnn.calibrate(rec, data, progress=False)
    s_rec = fxsnn.summary(rec)
    for row, m in zip(s_rec, [rec.relu, rec.get_submodule(fxsnn.find_sites(rec)[1].name)]):
        th = m.theta()
        assert row.theta == (float(th.min()), float(th.max()))
    q = fxsnn.passes.to_qcfs(rec, levels=3)
    assert [r.levels for r in fxsnn.summary(q)] == [3, 3] and fxsnn.summary(q).stage == "QCFS"
    s = fxsnn.summary(snn)
    assert s.stage == "ParallelIF" and [r.T for r in s] == [4, 4]
    assert [r.site for r in s] == [site.name for site in fxsnn.find_sites(snn)]
    assert s.delta_b_params == sum(m.delta_b.numel() for m in fxsnn.modes.neurons(snn).values()) == 8
    assert s.network_params == sum(p.numel() for p in snn.parameters())
    n = snn.relu
    assert s[0].psi_da == (float(n.psi_da.min()), float(n.psi_da.max()))
    phi = n.theta_post - n.theta_pre
    assert s[0].phi_da == pytest.approx((float(phi.min()), float(phi.max())))
    text = str(s)
    assert "Δb parameters: 8" in text and "ParallelIF" in text and "Δb range" in text


def test_summary_of_a_recorder_whose_channels_never_fired():
    """Every channel dead is not an error for summary: θ = 1 there, with the recorder's warning."""
    rec = dead_recorder()
    with pytest.warns(UserWarning, match="no channel ever activated"):
        row = fxsnn.summary(rec)[0]
    assert row.kind == "recorder" and row.theta == (1.0, 1.0)


def test_summary_reports_trained_delta_b(tiny):
    _, _, snn = tiny
    snn = fxsnn.passes.normalize(snn)  # a copy
    with torch.no_grad():
        snn.relu.delta_b.copy_(torch.tensor([-0.5, 0.1, 0.2, 0.3]))
    assert fxsnn.summary(snn)[0].delta_b == (-0.5, pytest.approx(0.3))


def test_summary_dict_and_csv(tiny, tmp_path):
    s = fxsnn.summary(tiny[2])
    d = s.to_dict()
    json.dumps(d)
    assert d["totals"]["delta_b_params"] == 8 and len(d["sites"]) == 2
    text = s.to_csv(tmp_path / "s.csv")
    assert (tmp_path / "s.csv").read_text() == text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2 and float(rows[0]["theta_max"]) == s[0].theta[1] and rows[0]["T"] == "4"
    with pytest.raises(FileNotFoundError, match="mkdir -p"):
        s.to_csv(tmp_path / "missing" / "s.csv")


def test_summary_counts_resnet34_delta_b_like_the_paper():
    """Appendix C: Stage 2 adds about 7.6k parameters to ResNet-34 (one Δb per channel of every ReLU site)."""
    import torchvision

    torch.manual_seed(0)
    gm = fxsnn.passes.insert_recorders(fxsnn.trace(torchvision.models.resnet34().eval()))
    gm = fxsnn.calibrate(gm, [torch.randn(2, 3, 32, 32)], progress=False)
    s = fxsnn.summary(fxsnn.passes.lower_to_paraif(fxsnn.passes.to_qcfs(gm, levels=2), T=2))
    assert len(s) == 33  # the stem plus two per basic block: 1 + 2·(3 + 4 + 6 + 3)
    assert s.delta_b_params == 64 + 2 * (3 * 64 + 4 * 128 + 6 * 256 + 3 * 512) == 7616


# -- analyze: statistics ----------------------------------------------------------------------
def _reference(model, snn, data):
    """Per site: all ANN activations and all SNN rates / counts, by independent hooks."""
    ann = fxsnn.passes.normalize(fxsnn.trace(model))
    names = [s.name for s in fxsnn.find_sites(snn)]
    a_all = {n: [] for n in names}
    r_all = {n: [] for n in names}
    k_all = {n: [] for n in names}
    hooks = [
        ann.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: a_all[n].append(o.detach())) for n in names
    ]
    for x, _ in data:
        with torch.no_grad():
            ann(x)
        counts = spike_counts(snn, x)
        for n in names:
            m = snn.get_submodule(n)
            k = counts[n]
            k_all[n].append(k)
            r_all[n].append(k * (m.theta_post / m.T).view(1, -1, 1, 1))
    for h in hooks:
        h.remove()
    cat = lambda d: {n: torch.cat(v).double().flatten().numpy() for n, v in d.items()}  # noqa: E731
    return cat(a_all), cat(r_all), cat(k_all)


def test_analyze_statistics_match_a_brute_force_reference(tiny):
    model, data, snn = tiny
    rep = fxsnn.analyze(model, snn, data, progress=False)
    a, r, k = _reference(model, snn, data)
    assert [row.site for row in rep.sites] == list(a)
    for row in rep.sites:
        n = row.site
        assert row.ann_mean == pytest.approx(a[n].mean(), rel=1e-6)
        assert row.ann_std == pytest.approx(a[n].std(), rel=1e-5)
        assert row.snn_mean == pytest.approx(r[n].mean(), rel=1e-6)
        assert row.snn_std == pytest.approx(r[n].std(), rel=1e-5)
        assert row.ann_sparsity == pytest.approx((a[n] == 0).mean())
        assert row.snn_sparsity == pytest.approx((k[n] == 0).mean())
        assert row.mae == pytest.approx(np.abs(a[n] - r[n]).mean(), rel=1e-6)
        assert row.wasserstein == pytest.approx(wasserstein_distance(a[n], r[n]), rel=1e-6)
        assert row.spike_rate == pytest.approx(k[n].mean() / 4, rel=1e-6)
        assert row.neurons == 4 * 8 * 8 and row.channels == 4
        assert 0 < row.snn_sparsity < 1 and row.mae > 0
        assert rep.spike_rates[n] == pytest.approx(row.spike_rate)
    assert rep.samples == 24 and rep.T == 4 and rep.mode == "spike"
    assert rep.ann_top1 == fxsnn.evaluate(model, data, progress=False).top1
    assert rep.snn_top1 == fxsnn.evaluate(snn, data, progress=False).top1


def test_analyze_rate_and_spike_modes_agree(tiny):
    model, data, snn = tiny
    spike = fxsnn.analyze(model, snn, data, progress=False, mode="spike")
    rate = fxsnn.analyze(model, snn, data, progress=False, mode="rate")
    assert fxsnn.modes.get_mode(snn) == "spike"  # restored
    assert rate.mode == "rate"
    for s, r in zip(spike.sites, rate.sites):
        assert s.spike_rate == pytest.approx(r.spike_rate) and s.mae == pytest.approx(r.mae, rel=1e-6)
    assert spike.snn_sops == pytest.approx(rate.snn_sops)


def test_subsample_is_uniform_and_paired(tiny):
    model, data, snn = tiny
    rep = fxsnn.analyze(model, snn, data, progress=False, max_samples=300)
    a, r, _ = _reference(model, snn, data)
    for row in rep.sites:
        sa, sr = rep.values[row.site]
        assert sa.shape == sr.shape == (300,)
        # every kept pair is a real (ANN, SNN) pair of the same neuron
        pairs = set(zip(a[row.site].round(6), r[row.site].round(6)))
        assert all((x, y) in pairs for x, y in zip(sa.round(6), sr.round(6)))
        assert row.wasserstein == pytest.approx(np.abs(np.sort(sa) - np.sort(sr)).mean())
        assert abs(sa.mean() - row.ann_mean) < 4 * row.ann_std / np.sqrt(300)


def test_analyze_leaves_everything_as_it_was(tiny):
    model, data, snn = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    snn_before = {k: v.clone() for k, v in snn.state_dict().items()}
    model.train()
    fxsnn.analyze(model, snn, data, progress=False, mode="rate")
    assert model.training and not snn.training and fxsnn.modes.get_mode(snn) == "spike"
    model.eval()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(snn_before[k], v) for k, v in snn.state_dict().items())
    assert not any(m._forward_hooks for m in snn.modules()) and not any(m._forward_hooks for m in model.modules())


def test_layers_max_batches_and_no_targets(tiny):
    model, data, snn = tiny
    names = [s.name for s in fxsnn.find_sites(snn)]
    rep = fxsnn.analyze(model, snn, [x for x, _ in data], layers=[-1], max_batches=2, progress=False)
    assert [r.site for r in rep.sites] == [names[-1]] and list(rep.values) == [names[-1]]
    assert rep.samples == 16 and rep.ann_top1 is None and rep.snn_top1 is None
    assert set(rep.spike_rates) == set(names)  # every site still measured for the energy table
    assert [r.site for r in fxsnn.analyze(model, snn, data, layers=names[0], progress=False).sites] == names[:1]


# -- analyze: SOPs and energy -----------------------------------------------------------------
def test_sops_equal_exact_spike_fanout_counts():
    """With fixed fan-out (1×1 conv: 5 per input neuron; linear: 3), SOP_l = T·r_in·FLOPs_l is exact."""
    model, data = fanout_net(), batches()
    T = 3
    snn = convert(model, data, T=T, da=False)
    rep = fxsnn.analyze(model, snn, data, progress=False)
    spikes = {"1": 0.0, "3": 0.0}
    for x, _ in data:
        counts = spike_counts(snn, x)
        for n in spikes:  # count the binary spike train, slot by slot
            spikes[n] += float(snn.get_submodule(n).spike_train(_mean_input(snn, n, x)).sum())
            assert spikes[n] > 0 or counts[n].sum() == 0
    rows = {r.layer: r for r in rep.energy}
    assert rows["0"].input == "analog" and rows["0"].sops is None and rows["0"].macs == 4 * 64 * 9
    assert rows["2"].input == "spikes" and rows["2"].sources == ("1",) and rows["2"].macs == 5 * 64 * 4
    assert rows["5"].input == "spikes" and rows["5"].sources == ("3",) and rows["5"].macs == 3 * 320
    assert rows["2"].sops * rep.samples == pytest.approx(spikes["1"] * 5, rel=1e-9)
    assert rows["5"].sops * rep.samples == pytest.approx(spikes["3"] * 3, rel=1e-9)
    e = EnergyModel()
    assert rep.ann_energy == pytest.approx(4.6e-12 * (576 * 4 + 1280 + 960))
    assert rep.snn_energy == pytest.approx(e.e_mac * 1e-12 * 2304 + e.e_ac * 1e-12 * (rows["2"].sops + rows["5"].sops))
    cheap = fxsnn.analyze(model, snn, data, progress=False, energy=EnergyModel(e_mac=1.0, e_ac=0.0))
    assert cheap.snn_energy == pytest.approx(1e-12 * 2304) and cheap.ann_energy == pytest.approx(1e-12 * rep.ann_macs)


def _mean_input(snn, name, x):
    """The time-averaged input current of one neuron for input x (spike mode)."""
    got = {}

    def hook(module, inputs, output):  # returns None: the output is left alone
        got["x"] = module.time_mean(inputs[0])

    h = snn.get_submodule(name).register_forward_hook(hook)
    with torch.no_grad():
        snn(x)
    h.remove()
    return got["x"]


def test_residual_network_energy_table(tiny):
    model, data, snn = tiny
    rep = fxsnn.analyze(model, snn, data, progress=False)
    rows = {r.layer: r for r in rep.energy}
    assert list(rows) == ["conv1", "conv2", "fc"]
    assert rows["conv1"].input == "analog"
    assert rows["conv2"].sources == ("relu",) and rows["fc"].sources == (fxsnn.find_sites(snn)[1].name,)
    assert rows["fc"].input_rate == pytest.approx(rep.sites[1].spike_rate)  # through the average pooling
    assert rows["conv2"].sops == pytest.approx(4 * rep.sites[0].spike_rate * rows["conv2"].macs)
    assert rep.ann_macs == 4 * 64 * 9 + 4 * 64 * 36 + 64 * 3
    text = str(rep)
    assert "SOPs" in text and "E_MAC = 4.6 pJ" in text and "spikes/neuron/step" in text


def test_layer_macs_formulas():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    x = torch.randn(2, 4, 9, 9)
    assert layer_macs(conv, x, conv(x)) == 6 * 5 * 5 * (2 * 9)
    lin = nn.Linear(7, 5)
    x = torch.randn(3, 2, 7)
    assert layer_macs(lin, x, lin(x)) == 2 * 5 * 7
    ct = nn.ConvTranspose2d(3, 4, 2, stride=2)
    x = torch.randn(1, 3, 4, 4)
    assert layer_macs(ct, x, ct(x)) == 3 * 16 * 4 * 4


def test_report_dict_and_csv(tiny, tmp_path):
    model, data, snn = tiny
    rep = fxsnn.analyze(model, snn, data, progress=False)
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["totals"]["T"] == 4 and len(d["sites"]) == 2 and len(d["energy"]) == 3
    assert d["totals"]["snn_energy_j"] == pytest.approx(rep.snn_energy)
    sites = list(csv.DictReader(io.StringIO(rep.to_csv(tmp_path / "a.csv"))))
    assert float(sites[0]["mae"]) == rep.sites[0].mae and (tmp_path / "a.csv").exists()
    energy = list(csv.DictReader(io.StringIO(rep.to_csv(table="energy"))))
    assert [r["layer"] for r in energy] == ["conv1", "conv2", "fc"] and energy[0]["sops"] == ""
    with pytest.raises(ValueError, match="'sites' or 'energy'"):
        rep.to_csv(table="nope")
    with pytest.raises(KeyError, match="not analysed"):
        rep.site("nope")


# -- analyze: bad input ---------------------------------------------------------------------
def test_unknown_layers_are_named(tiny):
    model, data, snn = tiny
    with pytest.raises(ValueError, match=r"no activation site named 'layer9'.*relu"):
        fxsnn.analyze(model, snn, data, layers=["layer9"], progress=False)
    with pytest.raises(ValueError, match="out of range; the network has 2 sites"):
        fxsnn.analyze(model, snn, data, layers=[5], progress=False)
    with pytest.raises(ValueError, match="layers is empty"):
        fxsnn.analyze(model, snn, data, layers=[], progress=False)
    with pytest.raises(TypeError, match="site names or integer indices"):
        fxsnn.analyze(model, snn, data, layers=[1.5], progress=False)


def test_wrong_networks_are_refused(tiny):
    model, data, snn = tiny
    with pytest.raises(fxsnn.ConversionError, match="ANN first"):
        fxsnn.analyze(snn, snn, data, progress=False)
    with pytest.raises(fxsnn.ConversionError, match="no ParallelIF"):
        fxsnn.analyze(model, fxsnn.trace(model), data, progress=False)
    with pytest.raises(fxsnn.ConversionError, match="pass the ANN this SNN was converted from"):
        fxsnn.analyze(fanout_net(), snn, data, progress=False)
    with pytest.raises(fxsnn.DataError, match="no batches"):
        fxsnn.analyze(model, snn, [], progress=False)
    with pytest.raises(ValueError, match="max_batches"):
        fxsnn.analyze(model, snn, data, max_batches=0, progress=False)
    with pytest.raises(ValueError, match="e_ac must be a finite number"):
        EnergyModel(e_ac=-1)
    with pytest.raises(TypeError, match="EnergyModel"):
        fxsnn.analyze(model, snn, data, energy=4.6, progress=False)


def test_analyze_reports_the_serial_networks_gap(tiny):
    """Item 15: with serial=True the report holds the serial IF network's gap to the parallel SNN, brute-forced."""
    model, data, snn = tiny
    plain = fxsnn.analyze(model, snn, data, progress=False)
    assert plain.serial is None and plain.totals()["serial_top1"] is None and "serial IF" not in str(plain)
    rep = fxsnn.analyze(model, snn, data, progress=False, serial=True)
    serial = fxsnn.passes.to_serial(snn)
    with torch.no_grad():
        pairs = [(serial(x), snn(x), y) for x, y in data]
    diff = max(float((s - p).abs().max()) for s, p, _ in pairs)
    agree = sum(int((s.argmax(1) == p.argmax(1)).sum()) for s, p, _ in pairs) / rep.samples
    top1 = sum(int((s.argmax(1) == y).sum()) for s, _, y in pairs) / rep.samples
    assert isinstance(rep.serial, fxsnn.report.SerialGap)
    assert rep.serial.max_abs_diff == diff and rep.serial.agreement == agree and rep.serial.top1 == top1
    assert diff > 0  # the serial network is not the parallel one (its neurons see their input late)
    totals = json.loads(json.dumps(rep.to_dict()))["totals"]
    assert totals["serial_max_abs_logit_diff"] == diff and totals["serial_agreement"] == agree
    assert totals["serial_top1"] == top1
    assert f"max |logit difference| {diff:.4g}, predictions agree on {100 * agree:.2f} %" in str(rep)
    assert f"top-1 serial {100 * top1:.2f} % vs parallel {100 * rep.snn_top1:.2f} %" in str(rep)
    assert rep.sites.to_dict() == plain.sites.to_dict()  # the serial run does not disturb the site statistics
    no_targets = fxsnn.analyze(model, snn, [x for x, _ in data], progress=False, serial=True)
    assert no_targets.serial.top1 is None and no_targets.serial.max_abs_diff == diff
