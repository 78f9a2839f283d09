"""fxsnn.testing's rate-vs-spike checks (issue 9 item 14) on a network built so that float32 rounding flips counts.

Spike mode feeds the second neuron ``mean_t(w·s_t) = fl(w/3)`` (one spike of θ = 1 in T = 3 slots), rate mode
``w·fl(1/3)``; its θ is put on the bin edge of the larger of the two, so wherever they round differently the
counts differ by one spike. In float64 the same network agrees everywhere.
"""

import pytest
import torch
from torch import nn

import fxsnn
import fxsnn.testing as ft
from fxsnn.nn import QCFS

T, C = 3, 64


def _edge_network() -> torch.fx.GraphModule:
    w = torch.rand(C, 1, generator=torch.Generator().manual_seed(0)) * 4 + 0.5
    spike_in, rate_in = w[:, 0] / 3, (w * (torch.ones(1) / 3))[:, 0]
    assert bool((spike_in != rate_in).any())
    ann = nn.Sequential(nn.ReLU(), nn.Linear(1, C, bias=False), nn.ReLU(), nn.Linear(C, 2)).eval()
    with torch.no_grad():
        ann[1].weight.copy_(w)
    rec = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(ann)), [torch.ones(1, 1)], progress=False)
    q = fxsnn.passes.to_qcfs(rec, levels=T)
    first, second = (m for m in q.modules() if isinstance(m, QCFS))
    with torch.no_grad():
        first.theta.fill_(1.0)
        second.theta.copy_(6 * torch.maximum(spike_in, rate_in))  # count 1 starts at x̄·T + θ/2 = θ
    return fxsnn.passes.lower_to_paraif(q, T=T, mode="rate")


X = torch.full((1, 1), 0.4)  # one spike out of the first neuron


def test_mismatches_are_counted_per_site_and_the_mode_is_restored():
    snn = _edge_network()
    r = ft.check_rate_matches_spike(snn, X, max_mismatch_rate=1.0)
    assert fxsnn.modes.get_mode(snn) == "rate"
    counts = {}
    for mode in ("rate", "spike"):
        fxsnn.set_mode(snn, mode)
        counts[mode] = fxsnn.report.probes.spike_counts(snn, X)
    fxsnn.set_mode(snn, "rate")
    want = {
        k: (int((counts["rate"][k] != counts["spike"][k]).sum()), counts["rate"][k].numel()) for k in counts["rate"]
    }
    assert r.per_site == want and want["0"] == (0, 1) and want["2"][0] > 0
    assert (r.mismatched, r.total) == (want["2"][0], 1 + C) and r.first_mismatch == "2"
    assert r.max_abs_diff > 0
    assert str(r).startswith(f"rate and spike mode differ on {r.mismatched}/{C + 1} spike counts")
    assert f"first at site '2' ({want['2'][0]}/{C})" in str(r)


def test_above_the_tolerance_it_fails_loudly_naming_the_site():
    snn = _edge_network()
    with pytest.raises(
        AssertionError, match=r"differ on \d+/65 spike counts .* first at site '2'.*max_mismatch_rate=0"
    ):
        ft.check_rate_matches_spike(snn, X, max_mismatch_rate=0.0)
    with pytest.raises(AssertionError, match=r"> the tolerance max_mismatch_rate=0.01"):
        ft.check_rate_matches_spike(snn, X)  # the default 1 %
    assert fxsnn.modes.get_mode(snn) == "rate"  # restored after a failure too
    with pytest.raises(ValueError, match="max_mismatch_rate must be in"):
        ft.check_rate_matches_spike(snn, X, max_mismatch_rate=2.0)


def test_float64_copy_agrees_exactly():
    snn = _edge_network()
    r = ft.check_rate_equals_spike_float64(snn, X)
    assert r.mismatched == 0 and r.first_mismatch is None and r.per_site["2"] == (0, C)
    assert next(snn.parameters()).dtype == torch.float32  # a copy ran
