"""Clipped ReLUs are sites (issue 10, item 7): ReLU6, Hardtanh(0, a), clamp(x, 0, a); θ never exceeds the clip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxsnn
from fxsnn.graph.sites import find_analog_ops


class Spellings(nn.Module):
    """Every clipped-ReLU spelling once (clip in the comment), and two clamps that are no ReLU."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 4, 4, 1) for i in range(9))
        self.relu6 = nn.ReLU6(inplace=True)
        self.ht = nn.Hardtanh(0.0, 2.5)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        c = self.convs
        h = self.relu6(c[0](x))  # 6
        h = F.relu6(c[1](h))  # 6
        h = self.ht(c[2](h))  # 2.5
        h = F.hardtanh(c[3](h), 0.0, 3.0)  # 3
        h = torch.clamp(c[4](h), 0, 4)  # 4
        h = c[5](h).clamp(min=0, max=5)  # 5
        h = torch.clamp(c[6](h), min=0)  # a plain ReLU
        h = F.hardtanh(c[7](h)) + torch.clamp(h, -1.0, 1.0)  # Hardtanh(-1, 1) and clamp(-1, 1): analog
        h = c[8](h).clamp_(0, 1.5)  # 1.5, in place
        return self.fc(h.mean((2, 3)))


CLIPS = [6.0, 6.0, 2.5, 3.0, 4.0, 5.0, None, 1.5]


def test_every_clipped_spelling_is_a_site_with_its_clip_and_the_rest_stays_analog():
    gm = fxsnn.trace(Spellings().eval())
    assert [s.clip for s in fxsnn.find_sites(gm)] == CLIPS
    assert [o.kind for o in find_analog_ops(gm)] == ["Hardtanh", "clamp"]
    norm = fxsnn.passes.normalize(gm)
    sites = fxsnn.find_sites(norm)
    assert [s.clip for s in sites] == CLIPS and all(s.kind == "ReLU" for s in sites)
    kinds = [type(norm.get_submodule(s.name)).__name__ for s in sites]
    assert kinds == ["ReLU6", "ReLU6", "Hardtanh", "Hardtanh", "Hardtanh", "Hardtanh", "ReLU", "Hardtanh"]
    assert "clip=2.5" in str(next(n for n in norm.graph.nodes if n.target == "ht").meta["fxsnn.site"])
    x = torch.randn(2, 3, 5, 5) * 4
    with torch.no_grad():
        assert torch.equal(norm(x), gm(x))


def test_recorder_theta_never_exceeds_the_clip_and_outputs_are_unchanged():
    torch.manual_seed(0)
    model = Spellings().eval()
    x = torch.randn(8, 3, 5, 5) * 20  # pre-activations far above every clip
    for percentile in (None, 99.0):
        gm = fxsnn.passes.insert_recorders(fxsnn.trace(model), percentile=percentile, allow_analog=True)  # 2 analog
        rec = fxsnn.calibrate(gm, [x])
        with torch.no_grad():
            assert torch.equal(rec(x), model(x))
        for site in fxsnn.find_sites(rec):
            m = rec.get_submodule(site.name)
            assert m.clip == site.clip
            if site.clip is not None:
                assert float(m.theta().max()) <= site.clip
        assert "clip=6" in repr(rec.get_submodule(fxsnn.find_sites(rec)[0].name))
    snn = fxsnn.passes.lower_to_paraif(fxsnn.passes.to_qcfs(rec, levels=4), T=4)
    assert [s.clip for s in fxsnn.find_sites(snn)] == CLIPS
    assert all(float(snn.get_submodule(s.name).theta_pre.max()) <= s.clip for s in fxsnn.find_sites(snn) if s.clip)


def test_recorder_rejects_a_bad_clip():
    with pytest.raises(ValueError, match="clip"):
        fxsnn.nn.ActivationRecorder(4, clip=0.0)


def test_stage1_keeps_a_trained_theta_at_most_the_clip():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Hardtanh(0.0, 0.25), nn.Flatten(), nn.Linear(64, 3)
    ).eval()
    data = [(torch.randn(8, 3, 4, 4) * 5, torch.randint(0, 3, (8,))) for _ in range(3)]
    da = fxsnn.front_end(model, data, levels=2, progress=False)
    tuned = fxsnn.recalibrate_bn(da, data, epochs=2, lr=0.5, theta_lr=5.0, progress=False)
    theta = tuned.get_submodule("2").theta.detach()
    assert float(theta.max()) <= 0.25


def test_mobilenet_v2_converts_end_to_end_with_full():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=4).eval()
    assert find_analog_ops(fxsnn.trace(model)) == ()
    data = [(torch.randn(2, 3, 32, 32), torch.randint(0, 4, (2,))) for _ in range(2)]
    cfg = fxsnn.ConvertConfig().override("stage1.epochs=1", "stage2.train.holdout=None")
    snn = fxsnn.convert(model, data, T=2, method="full", config=cfg, progress=False)
    sites = fxsnn.find_sites(snn)
    assert len(sites) == 35 and {s.clip for s in sites} == {6.0} and {s.kind for s in sites} == {"ParallelIF"}
    assert all(float(snn.get_submodule(s.name).theta_pre.max()) <= 6.0 for s in sites)
    assert "stage1" in snn.meta["fxsnn.convert"]["seconds"] and "stage2" in snn.meta["fxsnn.convert"]["seconds"]
    with torch.no_grad():
        assert torch.isfinite(snn(data[0][0])).all()
