"""fxsnn.save / fxsnn.load: bit-identical round trips, and clear refusals of foreign, corrupt or too-new files.

Forged files aimed at each rebuild step are in test_forged_files.py."""

import io
import json
import sys
import zipfile

import pytest
import torch
from helpers import batches, convert, tiny_resnet

import fxsnn
from fxsnn.io.saving import FORMAT_VERSION


@pytest.fixture(scope="module")
def ann():
    return tiny_resnet()


@pytest.fixture(scope="module")
def snn(ann):
    model, data = ann, batches()
    net = convert(model, data, T=4)
    with torch.no_grad():  # a "trained" Δb, so the round trip carries a non-default parameter
        for i, n in enumerate(fxsnn.modes.neurons(net).values()):
            n.delta_b.copy_(torch.linspace(-0.2, 0.3, n.channels) * (i + 1))
    net.meta["note"] = {"method": "test"}
    return net


def _outputs(net, x):
    with torch.no_grad():
        return {mode: fxsnn.set_mode(net, mode)(x).clone() for mode in ("spike", "rate")}


def test_round_trip_is_bit_identical(snn, ann, tmp_path):
    x = batches(1, 16, seed=7)[0][0]
    fxsnn.set_mode(snn, "rate")
    path = fxsnn.save(snn, tmp_path / "net.fxsnn")
    fxsnn.set_mode(snn, "spike")
    back = fxsnn.load(path, model=ann)
    assert isinstance(back, torch.fx.GraphModule) and back is not snn
    assert fxsnn.modes.get_mode(back) == "rate" and fxsnn.modes.time_steps(back) == 4  # the mode as saved
    a, b = snn.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for n, m in zip(fxsnn.modes.neurons(snn).values(), fxsnn.modes.neurons(back).values()):
        assert m.T == n.T and m.has_da == n.has_da and m.delta_b.requires_grad
    assert back.meta["note"] == {"method": "test"} and back.training == snn.training
    snn.train()
    assert fxsnn.load(fxsnn.save(snn, tmp_path / "train.fxsnn"), model=ann).training
    snn.eval()
    assert back.code == snn.code
    want, got = _outputs(snn, x), _outputs(back, x)
    for mode in want:
        assert torch.equal(want[mode], got[mode]), mode
    fxsnn.set_mode(snn, "spike")


def test_every_stage_round_trips(tmp_path):
    model, data = tiny_resnet(), batches()
    x = data[0][0]
    rec = fxsnn.passes.insert_recorders(fxsnn.trace(model))
    rec = fxsnn.calibrate(rec, data, progress=False)
    da = fxsnn.passes.to_da_qcfs(rec, levels=3)
    da = fxsnn.calibrate_da(da, data, progress=False)
    for gm in (rec, da, model):
        back = fxsnn.load(fxsnn.save(gm, tmp_path / "g.fxsnn"), model=model)
        with torch.no_grad():
            assert torch.equal(back(x), gm(x))
    assert fxsnn.io.read_header(tmp_path / "g.fxsnn")["class"] == "GrayResNet"
    fxsnn.save(da, tmp_path / "da.fxsnn")
    assert fxsnn.summary(fxsnn.load(tmp_path / "da.fxsnn", model=model))[0].psi_da == fxsnn.summary(da)[0].psi_da


def test_header_is_readable_without_unpickling(snn, tmp_path):
    path = fxsnn.save(snn, tmp_path / "h.fxsnn")
    h = fxsnn.io.read_header(path)
    assert h["format_version"] == FORMAT_VERSION and h["fxsnn_version"] == fxsnn.__version__
    assert h["stage"] == "ParallelIF" and h["T"] == 4 and h["delta_b_params"] == 8 and h["sites"] == 2
    assert h["torch_version"] == torch.__version__ and len(h["sha256"]) == 64


def _rewrite(src, dst, *, header=None, payload=None):
    """A copy of ``src`` with its header and/or tensor blob changed; the checksum is kept (it then mismatches a
    changed payload), unless only the header changes."""
    with zipfile.ZipFile(src) as zf:
        h, p = json.loads(zf.read("fxsnn.json")), zf.read("tensors.safetensors")
    h = header(h) if header else h
    with zipfile.ZipFile(dst, "w") as zf:
        zf.writestr("fxsnn.json", json.dumps(h))
        zf.writestr("tensors.safetensors", payload(p) if payload else p)
    return dst


def test_corrupt_and_foreign_files(snn, ann, tmp_path):
    good = fxsnn.save(snn, tmp_path / "good.fxsnn")
    data = open(good, "rb").read()
    (tmp_path / "trunc.fxsnn").write_bytes(data[: len(data) // 2])
    with pytest.raises(fxsnn.io.SaveFileError, match="truncated or corrupt"):
        fxsnn.load(tmp_path / "trunc.fxsnn", model=ann)
    (tmp_path / "noise.fxsnn").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(fxsnn.io.SaveFileError, match="not an fxsnn network file"):
        fxsnn.load(tmp_path / "noise.fxsnn", model=ann)
    flipped = _rewrite(good, tmp_path / "flip.fxsnn", payload=lambda p: p[:-100] + bytes([p[-100] ^ 1]) + p[-99:])
    with pytest.raises(fxsnn.io.SaveFileError, match="does not match its checksum"):
        fxsnn.load(flipped, model=ann)
    torch.save(snn.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(fxsnn.io.SaveFileError, match="use torch.load"):
        fxsnn.load(tmp_path / "plain.pt", model=ann)
    with pytest.raises(FileNotFoundError, match="no such file"):
        fxsnn.load(tmp_path / "absent.fxsnn", model=ann)
    with pytest.raises(fxsnn.io.SaveFileError, match="is a directory"):
        fxsnn.load(tmp_path, model=ann)
    bad_header = tmp_path / "badheader.fxsnn"
    with zipfile.ZipFile(bad_header, "w") as zf:
        zf.writestr("fxsnn.json", "{not json")
        zf.writestr("tensors.safetensors", b"")
    with pytest.raises(fxsnn.io.SaveFileError, match="header is unreadable"):
        fxsnn.load(bad_header, model=ann)


class _Boom:
    """Unpickling this sets a flag: the test checks that a refused file is never unpickled."""

    def __reduce__(self):
        return (_mark_unpickled, ())


UNPICKLED = []


def _mark_unpickled():
    UNPICKLED.append(True)
    return None


def test_newer_format_is_refused_before_unpickling(snn, ann, tmp_path):
    buf = io.BytesIO()
    torch.save(_Boom(), buf)
    newer = _rewrite(
        fxsnn.save(snn, tmp_path / "n.fxsnn"),
        tmp_path / "newer.fxsnn",
        header=lambda h: {**h, "format_version": FORMAT_VERSION + 1, "fxsnn_version": "9.0.0"},
        payload=lambda p: buf.getvalue(),
    )
    with pytest.raises(
        fxsnn.io.SaveFileError, match=rf"written by fxsnn 9\.0\.0 in file format {FORMAT_VERSION + 1}.*Upgrade fxsnn"
    ):
        fxsnn.load(newer, model=ann)
    with pytest.raises(fxsnn.io.SaveFileError, match="Upgrade fxsnn"):
        fxsnn.io.read_header(newer)
    other = _rewrite(tmp_path / "n.fxsnn", tmp_path / "other.fxsnn", header=lambda h: {**h, "format": "something.else"})
    with pytest.raises(fxsnn.io.SaveFileError, match="does not describe an fxsnn network"):
        fxsnn.load(other, model=ann)
    assert UNPICKLED == []


def test_load_needs_the_ann_and_never_imports_what_the_file_names(tmp_path, monkeypatch):
    """Was: a class the pickle needed could not be imported. Now no class is imported from a file at all: the
    user passes the ANN (a leaf-module trace too), or confirms the recorded spec."""
    src = tmp_path / "ephemeral_net_mod.py"
    src.write_text(
        "import torch\n"
        "class Leaf(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x * 2\n"
        "def net():\n"
        "    return torch.nn.Sequential(Leaf(), torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import ephemeral_net_mod

    ann = ephemeral_net_mod.net()
    gm = fxsnn.trace(ann, leaf_modules=[ephemeral_net_mod.Leaf])
    path = fxsnn.save(gm, tmp_path / "e.fxsnn", model_spec="ephemeral_net_mod:net")
    with pytest.raises(fxsnn.io.SaveFileError, match=r"needs the ANN.*model_spec='ephemeral_net_mod:net'.*model=ann"):
        fxsnn.load(path)
    back = fxsnn.load(path, model=fxsnn.trace(ann, leaf_modules=[ephemeral_net_mod.Leaf]))
    x = torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        assert torch.equal(back(x), gm(x))
    with pytest.raises(fxsnn.io.SaveFileError, match="records the model spec 'ephemeral_net_mod:net', not 'os:system'"):
        fxsnn.load(path, model_spec="os:system")
    assert torch.equal(fxsnn.load(path, model_spec="ephemeral_net_mod:net")(x), gm(x))
    monkeypatch.delitem(sys.modules, "ephemeral_net_mod")
    src.unlink()
    with pytest.raises(fxsnn.io.SaveFileError, match="cannot be rebuilt from the model you passed"):
        fxsnn.load(path, model=torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU()))
    assert "ephemeral_net_mod" not in sys.modules  # loading with a model never imports the recorded module


def test_save_errors(snn, tmp_path):
    with pytest.raises(FileNotFoundError, match="mkdir -p"):
        fxsnn.save(snn, tmp_path / "missing" / "x.fxsnn")
    with pytest.raises(TypeError, match="nn.Module"):
        fxsnn.save({"a": 1}, tmp_path / "x.fxsnn")
    hooked = fxsnn.passes.normalize(snn)
    hooked.register_forward_hook(lambda *a: None)
    with pytest.raises(fxsnn.FxsnnError, match="could not serialise"):
        fxsnn.save(hooked, tmp_path / "x.fxsnn")
    assert not list(tmp_path.iterdir())  # nothing half-written
