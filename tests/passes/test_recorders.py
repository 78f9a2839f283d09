"""ActivationRecorder: in line, per-channel max / percentile, dead channels, state_dict, data checks."""

import numpy as np
import pytest
import torch
from torch import nn

import fxsnn
from fxsnn.nn import ActivationRecorder


def test_recorder_is_a_relu_in_line_and_records_only_when_enabled():
    rec = ActivationRecorder(3)
    x = torch.randn(4, 3, 5, 5)
    assert torch.equal(rec(x), torch.relu(x)) and not rec.has_data
    rec.recording = True
    rec(x)
    assert torch.equal(rec.max_val, x.transpose(0, 1).reshape(3, -1).amax(1))


def test_running_max_over_batches_and_percentile_matches_numpy():
    torch.manual_seed(0)
    rec_max, rec_pct = ActivationRecorder(2), ActivationRecorder(2, percentile=99.0, bins=4096)
    xs = [torch.randn(64, 2, 4, 4) * (i + 1) for i in range(3)]  # growing range: histogram must rebin
    for r in (rec_max, rec_pct):
        r.recording = True
        for x in xs:
            r(x)
    allx = torch.cat(xs).transpose(0, 1).reshape(2, -1)
    assert torch.equal(rec_max.theta(), allx.amax(1))
    # the recorder returns the upper edge of the histogram bin holding the rank-th value
    want = np.percentile(np.maximum(allx.numpy(), 0), 99.0, axis=1, method="higher")
    got = rec_pct.theta().numpy()
    width = rec_pct.hist_hi.numpy() / rec_pct.bins
    assert np.all(got >= want) and np.all(got - want <= width * 1.001)


def test_dead_channels_get_the_live_median_and_stay_silent():
    rec = ActivationRecorder(3)
    rec.recording = True
    x = torch.randn(16, 3, 4, 4)
    x[:, 1] = -x[:, 1].abs() - 0.1  # channel 1 never activates
    rec(x)
    raw = rec.raw_theta()
    assert raw[1] <= 0 and rec.dead_channels().tolist() == [False, True, False]
    theta = rec.theta()
    assert theta[1] == raw[[0, 2]].median() and bool((theta > 0).all())
    q = fxsnn.nn.QCFS(theta, levels=4)
    assert torch.equal(q(x)[:, 1], torch.zeros_like(x[:, 1]))


def test_a_site_that_never_activates_warns_and_gets_theta_one():
    rec = ActivationRecorder(2)
    rec.recording = True
    rec(-torch.rand(4, 2))
    with pytest.warns(UserWarning, match="never|no channel"):
        assert torch.equal(rec.theta(), torch.ones(2))


def test_recorder_state_dict_round_trips_including_lazy_channels():
    rec = ActivationRecorder(None, percentile=99.9)
    rec.recording = True
    rec(torch.randn(8, 5, 3))
    fresh = ActivationRecorder(None, percentile=99.9)
    fresh.load_state_dict(rec.state_dict())
    assert torch.equal(fresh.theta(), rec.theta())


def test_calibrate_errors_on_empty_data_and_models_without_recorders():
    gm = fxsnn.passes.insert_recorders(fxsnn.trace(nn.Sequential(nn.Linear(3, 4), nn.ReLU())))
    with pytest.raises(fxsnn.DataError, match="no batches"):
        fxsnn.calibrate(gm, [])
    with pytest.raises(fxsnn.DataError, match="single tensor"):
        fxsnn.calibrate(gm, torch.randn(4, 3))
    with pytest.raises(fxsnn.ConversionError, match="insert_recorders"):
        fxsnn.calibrate(fxsnn.trace(nn.Sequential(nn.Linear(3, 4), nn.ReLU())), [torch.randn(2, 3)])


def test_calibrate_accepts_tensors_tuples_and_dataloaders():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=5)
    thetas = []
    for data in ([x[:5], x[5:]], [(x[:5], y[:5]), (x[5:], y[5:])], loader):
        gm = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(model)), data, progress=False)
        thetas.append(gm.get_submodule("1").theta())
    assert all(torch.equal(t, thetas[0]) for t in thetas)
