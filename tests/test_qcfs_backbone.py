"""QCFS-trained backbones (the paper's Table 1 path): a model that already contains QCFS activations converts
without recorders (issue 10 item 9). The user classes below are written here after the conventions of the public
QCFS / FS-PC code that fxsnn.graph.conventions reads (same attribute names and formula)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxsnn
from fxsnn.graph import patterns
from fxsnn.nn import DAQCFS, QCFS, ParallelIF


class _STEFloor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.floor()

    @staticmethod
    def backward(ctx, g):
        return g


class MyFloor(nn.Module):
    """The QCFS code's convention: learnable ``up`` ([1]) and ``t`` levels."""

    def __init__(self, up: float = 8.0, t: int = 4):
        super().__init__()
        self.up = nn.Parameter(torch.tensor([up]))
        self.t = t

    def forward(self, x):
        y = _STEFloor.apply(x / self.up * self.t + 0.5) / self.t
        return torch.clamp(y, 0, 1) * self.up


class IF(nn.Module):
    """The ANN_SNN_QCFS convention: ``thresh`` ([1]), ``L`` levels, a QCFS only with ``T == 0``."""

    def __init__(self, T: int = 0, L: int = 4, thresh: float = 2.0):
        super().__init__()
        self.thresh = nn.Parameter(torch.tensor([thresh]))
        self.L, self.T = L, T

    def forward(self, x):
        if self.T > 0:  # the serial IF neuron of that code (not a QCFS): a stand-in that is no QCFS
            return (x > self.thresh).to(x.dtype) * self.thresh
        x = torch.clamp(x / self.thresh, 0, 1)
        return _STEFloor.apply(x * self.L + 0.5) / self.L * self.thresh


class FSPCQCFS(nn.Module):
    """The FS-PC code's convention (class name QCFS): ``up`` ([1] or [C, 1, 1]), ``t``; ``cab_inf`` = DA-QCFS."""

    def __init__(self, up, t: int = 4, channels: int = 1):
        super().__init__()
        self.up = nn.Parameter(torch.as_tensor(up, dtype=torch.float32))
        self.t, self.is_cab, self.cab_inf = t, False, False
        self.register_buffer("rec_in_mean", torch.zeros(channels, 1, 1))
        self.register_buffer("rec_th_mean", torch.zeros(channels, 1, 1))

    def forward(self, x):
        if self.cab_inf:
            q = torch.clamp(_STEFloor.apply((x + self.rec_in_mean) * self.t / self.up + 0.5) / self.t, 0, 1)
            return q * (self.up + self.rec_th_mean)
        return torch.clamp(_STEFloor.apply(x / self.up * self.t + 0.5) / self.t, 0, 1) * self.up


FSPCQCFS.__name__ = "QCFS"  # the class name the FS-PC code uses


class Quant(nn.Module):
    """A hand-written QCFS a user declares with register_qcfs: per-channel ``alpha`` [C], ``n`` levels, shift φ."""

    def __init__(self, channels: int, n: int = 4, shift: float = 0.5):
        super().__init__()
        self.alpha = nn.Parameter(torch.linspace(1.0, 2.0, channels))
        self.n, self.phi = n, shift

    def forward(self, x):
        a = self.alpha.view(1, -1, 1, 1)
        return torch.clamp(_STEFloor.apply(x * self.n / a + self.phi), 0, self.n) * a / self.n


class Net(nn.Module):
    """conv-bn-act, a residual conv-bn(+x)-act, pooling, linear: one activation class throughout."""

    def __init__(self, act, c: int = 6, classes: int = 3):
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), act()
        self.conv2, self.bn2, self.act2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), act()
        self.linear = nn.Linear(c, classes)

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)) + out)
        return self.linear(F.avg_pool2d(out, 2).mean(dim=(2, 3)))


def _data(n: int = 64, batch: int = 16, seed: int = 1) -> list:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def _finetuned(act, steps: int = 30, seed: int = 0) -> Net:
    """A tiny CNN fine-tuned with QCFS activations for a few SGD steps on random data (θ learnt too)."""
    torch.manual_seed(seed)
    model = Net(act)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = _data(seed=seed + 7)
    for step in range(steps):
        x, y = data[step % len(data)]
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def _qcfs_net(L: int = 4) -> Net:
    return _finetuned(lambda: QCFS(torch.full((6,), 1.5), levels=L))


def _state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model: nn.Module, before: dict) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


# -- sites -------------------------------------------------------------------------------------------------
def test_fxsnn_qcfs_inside_a_model_traces_as_a_site():
    sites = fxsnn.find_sites(fxsnn.trace(_qcfs_net()))
    assert [(s.name, s.kind, s.channels) for s in sites] == [("act1", "QCFS", 6), ("act2", "QCFS", 6)]
    assert [s.pattern for s in sites] == ["conv→bn→relu", "add→relu"]


def test_daqcfs_inside_a_model_traces_as_a_site():
    model = Net(lambda: DAQCFS(torch.ones(6), levels=2)).eval()
    assert [s.kind for s in fxsnn.find_sites(fxsnn.trace(model))] == ["DA-QCFS", "DA-QCFS"]


@pytest.mark.parametrize(
    "act, kind",
    [
        (lambda: MyFloor(2.0, 4), "QCFS-like MyFloor"),
        (lambda: IF(0, 4, 2.0), "QCFS-like IF"),
        (lambda: FSPCQCFS([2.0], 4), "QCFS-like QCFS"),
        (lambda: FSPCQCFS(torch.full((6, 1, 1), 2.0), 4, channels=6), "QCFS-like QCFS"),
    ],
)
def test_public_code_conventions_are_sites(act, kind):
    gm = fxsnn.trace(Net(act).eval())
    assert [(s.kind, s.channels) for s in fxsnn.find_sites(gm)] == [(kind, 6), (kind, 6)]
    assert not fxsnn.graph.find_analog_ops(gm)  # a site, not an opaque analog module
    modules = dict(gm.named_modules())
    node = next(n for n in gm.graph.nodes if n.target == "act1")
    assert patterns.analog_kind(node, modules) is None


def test_a_module_outside_the_conventions_stays_what_it_is():
    # IF in its serial-neuron mode (T > 0) is no QCFS: traced through as before, no QCFS-like site
    gm = fxsnn.trace(Net(lambda: IF(4, 4, 2.0)).eval())
    assert not any(s.kind.startswith("QCFS-like") for s in fxsnn.find_sites(gm))
    assert not [n for n in gm.graph.nodes if n.op == "call_module" and n.target == "act1"]  # traced through


def test_a_convention_name_that_computes_something_else_warns_and_stays_opaque():
    class MyFloor(nn.Module):  # the attributes of the QCFS code, but no +0.5 shift
        def __init__(self):
            super().__init__()
            self.up, self.t = nn.Parameter(torch.tensor([2.0])), 4

        def forward(self, x):
            return torch.clamp(torch.floor(x / self.up * self.t) / self.t, 0, 1) * self.up

    with pytest.warns(UserWarning, match="does not compute QCFS on a probe input"):
        gm = fxsnn.trace(Net(MyFloor).eval())
    assert not any(s.kind.startswith("QCFS-like") for s in fxsnn.find_sites(gm))


# -- convert: fspc at T = L reproduces the QCFS network ---------------------------------------------------
def _site_inputs(model: nn.Module, names: list[str], x: torch.Tensor) -> dict:
    seen = {}
    hooks = [
        model.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, a[0])) for n in names
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def test_fspc_at_T_equal_L_gives_the_qcfs_models_counts_and_outputs():
    model = _qcfs_net(L=4)
    before = _state(model)
    data = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no L != T warning: L == T
        snn = fxsnn.convert(model, data, T=4, method="fspc", progress=False)
    assert snn.meta["fxsnn.convert"]["skipped"] == {"recorders": fxsnn.conversion.QCFS_BACKBONE}
    assert _same_state(model, before) and isinstance(model.act1, QCFS)
    x = torch.cat([b[0] for b in data])
    ann_in = _site_inputs(model, ["act1", "act2"], x)
    snn_out = {}
    hooks = [
        snn.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: snn_out.__setitem__(n, o))
        for n in ("act1", "act2")
    ]
    fxsnn.set_mode(snn, "spike")
    with torch.no_grad():
        spiking = snn(x)
    for h in hooks:
        h.remove()
    for name in ("act1", "act2"):
        neuron = snn.get_submodule(name)
        assert isinstance(neuron, ParallelIF)
        assert torch.equal(neuron.theta_pre, model.get_submodule(name).theta.detach())
        spikes = snn_out[name].reshape((4, x.shape[0]) + snn_out[name].shape[1:])
        counts = (spikes / neuron.theta_post.view(-1, 1, 1)).sum(0)
        assert torch.equal(counts, model.get_submodule(name).integer_target(ann_in[name]))
    with torch.no_grad():
        ann = model(x)
        torch.testing.assert_close(spiking, ann, rtol=1e-5, atol=1e-5)
        assert torch.equal(fxsnn.set_mode(snn, "rate")(x), ann)  # rate mode: bit-identical


@pytest.mark.parametrize("act", [lambda: MyFloor(1.5, 4), lambda: IF(0, 4, 1.5), lambda: FSPCQCFS([1.5], 4)])
def test_public_convention_backbones_convert_with_fspc(act):
    model = _finetuned(act, steps=20)
    before = _state(model)
    data = _data()
    snn = fxsnn.convert(model, data, T=4, method="fspc", progress=False)
    x = torch.cat([b[0] for b in data])
    assert _same_state(model, before)
    theta = model.act1.up if hasattr(model.act1, "up") else model.act1.thresh
    assert torch.equal(snn.act1.theta_pre, theta.detach().expand(6))  # the layer's θ, broadcast per channel
    with torch.no_grad():
        assert torch.equal(fxsnn.set_mode(snn, "rate")(x), model(x))  # mid-bin values: no rounding tie here


def test_fspc_calibrated_daqcfs_convention_reads_its_da_terms():
    model = Net(lambda: FSPCQCFS(torch.full((6, 1, 1), 1.5), 4, channels=6))
    torch.manual_seed(3)
    for m in (model.act1, model.act2):
        m.cab_inf = True
        m.rec_in_mean.uniform_(-0.2, 0.2)
        m.rec_th_mean.uniform_(-0.1, 0.1)
    model.eval()
    adopted = fxsnn.passes.adopt_qcfs(fxsnn.trace(model))
    assert isinstance(adopted.act1, DAQCFS)
    assert torch.equal(adopted.act1.psi_da, model.act1.rec_in_mean.flatten())
    snn = fxsnn.convert(model, _data(), T=4, method="fspc", progress=False)
    assert snn.act1.has_da
    x = _data()[0][0]
    with torch.no_grad():
        torch.testing.assert_close(fxsnn.set_mode(snn, "rate")(x), model(x), rtol=1e-5, atol=1e-6)


def test_fspc_with_levels_other_than_T_warns_naming_both():
    model = _qcfs_net(L=8)
    with pytest.warns(UserWarning, match=r"levels=8 but are lowered with T=4"):
        fxsnn.convert(model, _data(), T=4, method="fspc", progress=False)


# -- convert: the DA methods and the stages ---------------------------------------------------------------
@pytest.mark.parametrize("method", ["fspc_da", "full"])
def test_da_methods_calibrate_against_the_backbones_qcfs(method):
    model = _qcfs_net(L=8)
    before = _state(model)
    data = _data()
    front = fxsnn.front_end(model, data, levels=2, progress=False)
    assert front.meta["fxsnn.front_end"]["theta"] == "model"
    assert isinstance(front.act1, DAQCFS) and front.act1.reference_levels == 8 and front.act1.levels == 2
    assert torch.equal(front.act1.theta.detach(), model.act1.theta.detach())
    # Algorithm 1, stage II ran (the first site's input is the same in both passes: ψ_DA stays 0 there)
    assert float(front.act1.phi_da.abs().max()) > 0 and float(front.act2.psi_da.abs().max()) > 0
    snn = fxsnn.convert(model, data, T=2, method=method, progress=False)
    meta = snn.meta["fxsnn.convert"]
    assert meta["skipped"] == {"recorders": fxsnn.conversion.QCFS_BACKBONE}
    assert "calibrate" not in meta["seconds"] and "calibrate_da" in meta["seconds"]
    assert ("stage1" in meta["seconds"]) == ("stage2" in meta["seconds"]) == (method == "full")
    assert isinstance(snn.act1, ParallelIF) and snn.act1.has_da and snn.act1.T == 2
    assert _same_state(model, before)
    with torch.no_grad():
        assert torch.isfinite(snn(data[0][0])).all()


# -- the registry -------------------------------------------------------------------------------------------
@pytest.fixture
def registered():
    def register(**kw):
        patterns.register_qcfs(Quant, **kw)

    yield register
    patterns.unregister_qcfs(Quant)


def test_a_registered_user_class_is_a_site_and_converts(registered):
    model = _finetuned(lambda: Quant(6, n=4), steps=20)
    assert [s.kind for s in fxsnn.find_sites(fxsnn.trace(model))] == ["function clamp", "function clamp"]
    registered(theta="alpha", levels=lambda m: m.n, shift=lambda m: m.phi)
    gm = fxsnn.trace(model)
    assert [s.kind for s in fxsnn.find_sites(gm)] == ["QCFS-like Quant", "QCFS-like Quant"]
    before = _state(model)
    snn = fxsnn.convert(model, _data(), T=4, method="fspc", progress=False)
    assert torch.equal(snn.act1.theta_pre, model.act1.alpha.detach())
    x = torch.cat([b[0] for b in _data()])
    with torch.no_grad():
        assert torch.equal(fxsnn.set_mode(snn, "rate")(x), model(x))
    assert _same_state(model, before)
    full = fxsnn.convert(model, _data(), T=2, method="full", progress=False)
    assert full.meta["fxsnn.convert"]["skipped"] == {"recorders": fxsnn.conversion.QCFS_BACKBONE}


def test_a_registered_shift_other_than_half_lowers_exactly_and_da_refuses(registered):
    model = Net(lambda: Quant(6, n=4, shift=0.25)).eval()
    registered(theta="alpha", levels="n", shift=0.25)
    snn = fxsnn.convert(model, _data(), T=4, method="fspc", progress=False)
    x = _data()[0][0]
    with torch.no_grad():
        torch.testing.assert_close(fxsnn.set_mode(snn, "rate")(x), model(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(fxsnn.ConversionError, match="shift 0.25"):
        fxsnn.convert(model, _data(), T=4, method="fspc_da", progress=False)


def test_a_wrong_registration_is_refused_by_the_probe(registered):
    registered(theta="alpha", levels=8)  # the module has n = 4 levels
    with pytest.raises(fxsnn.ConversionError, match=r"Quant is registered as QCFS-like.*probe input"):
        fxsnn.trace(Net(lambda: Quant(6, n=4)).eval())


def test_register_qcfs_checks_its_arguments():
    with pytest.raises(TypeError, match="nn.Module subclass"):
        patterns.register_qcfs(int, theta="a", levels=2)
    with pytest.raises(ValueError, match="fxsnn's own class"):
        patterns.register_qcfs(QCFS, theta="theta", levels="levels")
    with pytest.raises(ValueError, match=r"shift must be in \[0, 1\)"):
        patterns.register_qcfs(Quant, theta="alpha", levels="n", shift=1.5)
    assert patterns.qcfs_reading(Quant(3)) is None  # nothing was registered


def test_a_model_mixing_qcfs_and_relu_is_refused():
    class Mixed(Net):
        def __init__(self):
            super().__init__(lambda: QCFS(torch.ones(6), 4))
            self.act2 = nn.ReLU()

    with pytest.raises(fxsnn.ConversionError, match=r"mixes 1 QCFS activation.*'act2' \(ReLU\)"):
        fxsnn.convert(Mixed().eval(), _data(), T=4, method="fspc", progress=False)


def test_the_user_model_is_deep_copied_not_touched_by_tracing():
    model = _finetuned(lambda: MyFloor(1.5, 4), steps=5)
    snapshot = copy.deepcopy(model)
    fxsnn.find_sites(fxsnn.trace(model))
    assert _same_state(model, _state(snapshot)) and model.training is False


@pytest.mark.filterwarnings("ignore:.*quantised with levels=4 but are lowered with T=2")
@pytest.mark.parametrize("method", ["fspc", "fspc_da"])
def test_a_converted_qcfs_backbone_saves_and_loads_bit_identically(tmp_path, method):
    model = _finetuned(lambda: MyFloor(1.5, 4), steps=5)
    snn = fxsnn.convert(model, _data(), T=2, method=method, progress=False)
    path = fxsnn.save(snn, tmp_path / "net.fxsnn")
    again = fxsnn.load(path, model=model)
    x = _data()[0][0]
    with torch.no_grad():
        assert torch.equal(again(x), snn(x))
    relu = Net(nn.ReLU).eval()  # the same architecture with ReLUs is not the backbone the file was made from
    with pytest.raises(fxsnn.FxsnnError, match="adopt_qcfs"):
        fxsnn.load(path, model=relu)
