"""The .fxsnn format under attack: bit-identical round trips at every stage, and forged files aimed at each rebuild
step refused with SaveFileError (never a raw error, never code run)."""

import dataclasses
import io
import json
import os
import sys
import zipfile

import pytest
import torch
from helpers import batches, tiny_resnet
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

import fxsnn
from fxsnn.io.archive import write_archive

P = fxsnn.passes


@pytest.fixture(scope="module")
def ann():
    return tiny_resnet()


def _stages(model, data):
    rec0 = P.insert_recorders(fxsnn.trace(model))
    rec = P.insert_recorders(fxsnn.trace(model))
    rec = fxsnn.calibrate(rec, data, progress=False)
    pct = P.insert_recorders(fxsnn.trace(model), percentile=99.0, bins=64)
    pct = fxsnn.calibrate(pct, data, progress=False)
    q = P.to_qcfs(rec, levels=3)
    da = P.to_da_qcfs(rec, levels=4)
    da = fxsnn.calibrate_da(da, data, progress=False)
    da_from_q = P.to_da_qcfs(q, levels=5)
    da_from_q = fxsnn.calibrate_da(da_from_q, data, progress=False)
    spike = P.lower_to_paraif(da, T=4)
    rate = P.lower_to_paraif(q, T=3, mode="rate")
    tuned = fxsnn.tune_delta_b(P.lower_to_paraif(da, T=4), data, T=4, steps=3, lr=0.5, progress=False)
    with torch.no_grad():  # what Stage 2 leaves, whether or not three steps moved it
        for i, n in enumerate(fxsnn.modes.neurons(tuned).values()):
            n.delta_b.add_(torch.linspace(-0.2, 0.3, n.channels) * (i + 1))
    return {
        "traced": fxsnn.trace(model),
        "normalized": P.normalize(fxsnn.trace(model)),
        "recorders (no data)": rec0,
        "recorders": rec,
        "percentile recorders": pct,
        "QCFS": q,
        "DA-QCFS": da,
        "DA-QCFS from QCFS": da_from_q,
        "lowered spike": spike,
        "lowered rate": rate,
        "stage 2": tuned,
        "module": model,
    }


@pytest.fixture(scope="module")
def stages(ann):
    return _stages(ann, batches())


@pytest.mark.parametrize(
    "stage",
    [
        "traced",
        "normalized",
        "recorders (no data)",
        "recorders",
        "percentile recorders",
        "QCFS",
        "DA-QCFS",
        "DA-QCFS from QCFS",
        "lowered spike",
        "lowered rate",
        "stage 2",
        "module",
    ],
)
def test_every_stage_is_bit_identical(stages, ann, stage, tmp_path):
    gm = stages[stage]
    if stage == "stage 2":
        assert any(float(n.delta_b.detach().abs().max()) > 0 for n in fxsnn.modes.neurons(gm).values())
    back = fxsnn.load(fxsnn.save(gm, tmp_path / "s.fxsnn"), model=ann)
    a, b = gm.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    x = batches(1, 6, seed=9)[0][0]
    with torch.no_grad():
        assert torch.equal(back(x), gm(x))
        if stage.startswith(("lowered", "stage")):
            for mode in ("spike", "rate"):
                assert torch.equal(fxsnn.set_mode(back, mode)(x), fxsnn.set_mode(gm, mode)(x)), mode
            fxsnn.set_mode(gm, "rate" if stage == "lowered rate" else "spike")
    if isinstance(gm, torch.fx.GraphModule):
        assert back.code == gm.code and fxsnn.find_sites(back) == fxsnn.find_sites(gm)
    assert [m.training for m in back.modules()] == [m.training for m in gm.modules()]


def test_rebuild_from_dtype_and_recording_state(ann, tmp_path):
    rec = P.insert_recorders(fxsnn.trace(ann.double()))
    rec = fxsnn.calibrate(rec, [(x.double(), y) for x, y in batches()], progress=False)
    rec.get_submodule("relu").recording = True
    back = fxsnn.load(fxsnn.save(rec, tmp_path / "d.fxsnn"), model=tiny_resnet().double())
    assert back.get_submodule("relu").recording and back.get_submodule("relu").max_val.dtype == torch.float64
    with pytest.raises(fxsnn.io.SaveFileError, match=r"float64 .* needs torch.float32.*model.double\(\)"):
        fxsnn.load(tmp_path / "d.fxsnn", model=tiny_resnet())
    ann.float()


def test_meta_round_trips_as_json_data(stages, ann, tmp_path):
    @dataclasses.dataclass
    class Inner:
        a: int = 1
        b: tuple = (1.5, "x")

    @dataclasses.dataclass
    class Outer:
        inner: Inner = dataclasses.field(default_factory=Inner)
        name: str = "n"

    gm = fxsnn.passes.normalize(stages["traced"])
    gm.meta.update(cfg=Outer(), plain={"k": [1, 2]}, fn=print, tensor=torch.ones(2))
    with pytest.warns(UserWarning, match=r"not JSON data and were not saved: meta.fn \(builtin_function_or_method\)"):
        path = fxsnn.save(gm, tmp_path / "m.fxsnn")
    back = fxsnn.load(path, model=ann)
    assert back.meta["cfg"] == {"inner": {"a": 1, "b": [1.5, "x"]}, "name": "n"} and back.meta["plain"] == {"k": [1, 2]}
    assert "fn" not in back.meta and "tensor" not in back.meta
    assert fxsnn.io.read_header(path)["meta_dropped"] == [
        "meta.fn (builtin_function_or_method)",
        "meta.tensor (Tensor)",
    ]


def test_save_replaces_atomically_and_never_follows_a_planted_symlink(stages, ann, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "net.fxsnn"
    os.symlink(victim, f"{target}.tmp-{os.getpid()}")  # the old predictable temporary name
    os.symlink(victim, target.with_name(".net.fxsnn.tmp"))
    fxsnn.save(stages["QCFS"], target)
    assert victim.read_text() == "precious" and target.is_file() and not target.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".net.fxsnn.tmp",
        "net.fxsnn",
        "net.fxsnn.tmp-" + str(os.getpid()),
        "victim.txt",
    ]
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # the permissions open() would give, not mkstemp's
    fxsnn.load(target, model=ann)


# -- forged files ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good(stages, tmp_path_factory):
    return fxsnn.save(stages["stage 2"], tmp_path_factory.mktemp("forge") / "good.fxsnn")


def _forge(good, dst, *, header=None, tensors=None):
    """A copy of ``good`` with the header and/or tensors changed and a *valid* checksum (what a forger writes)."""
    with zipfile.ZipFile(good) as zf:
        h, t = json.loads(zf.read("fxsnn.json")), load_tensors(zf.read("tensors.safetensors"))
    if header:
        header(h)
    if tensors:
        tensors(t)
    h = {k: v for k, v in h.items() if k not in ("sha256", "bytes")}
    write_archive(str(dst), h, save_tensors(t))
    return dst


def _set(path, value):
    def edit(h):
        node = h
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


FORGED_HEADERS = [
    (_set(["passes", 0, "name"], "os.system"), "names no fxsnn pass"),
    (_set(["passes", 1, "name"], "normalize"), "cannot follow insert_recorders"),
    (_set(["passes", 1, "levels"], "4; import os"), r"levels must be an integer"),
    (_set(["passes", 1, "levels"], 10**30), r"levels must be an integer in \[1, 1048576\]"),
    (_set(["passes", 2, "T"], 0), "T must be an integer"),
    (_set(["passes", 2, "mode"], "__import__('os')"), "mode must be 'spike' or 'rate'"),
    (_set(["passes", 0, "percentile"], 1e308), r"percentile must be null or a number in \(0, 100\]"),
    (_set(["passes", 0, "bins"], 1000), "bins must be a power of two"),
    (_set(["passes", 0, "extra"], 1), "must have exactly the fields"),
    (_set(["passes"], [{"name": "lower_to_paraif", "T": 4, "mode": "spike"}] * 9), "at most 8 entries"),
    (_set(["passes"], "insert_recorders"), "passes must be a list"),
    (_set(["modules", "relu", "type"], "Popen"), "has type 'Popen'"),
    (_set(["modules", "relu", "type"], ["unhashable"]), "has type \\['unhashable'\\]"),
    (_set(["passes", 0, "name"], {"a": 1}), "names no fxsnn pass"),
    (_set(["site_table"], [None, None]), "site 0 differs"),
    (_set(["nodes"], {"a": 1}), "nodes must be a list"),
    (_set(["modules", "relu", "T"], 5), "T is 5 in the file; the rebuild gives 4"),
    (_set(["modules", "relu", "T"], True), "T must be an integer"),
    (_set(["modules", "relu", "channels"], 10**6), r"channels \(1000000\) do not match its θ tensor"),
    (_set(["modules", "relu", "mode"], "rate"), "mode 'rate' differs from the network's 'spike'"),
    (_set(["modules", "relu", "fused"], "yes"), "fused must be true or false"),
    (_set(["modules", "../../etc/passwd"], {"type": "TimeMean", "T": 4, "mode": "spike"}), "is in the file but not"),
    (lambda h: h["modules"].pop("time_mean"), "'time_mean' is in the rebuilt network but not the file"),
    (_set(["site_table", 0, "kind"], "QCFS"), "site 0 differs"),
    (lambda h: h["site_table"].append(h["site_table"][0]), "records 3 sites"),
    (_set(["nodes", 3, 2], "os.system"), "graph node 3 differs"),
    (_set(["leaf_modules"], ["no.such.module"]), "tracing the model you passed failed"),
    (_set(["training"], ["nope"]), "training names 'nope'"),
    (_set(["frozen"], [7]), "a frozen entry must be a string"),
    (_set(["meta"], [1, 2]), "meta must be an object"),
    (_set(["kind"], "pickle"), "kind must be 'module' or 'graph'"),
    (_set(["ann"], None), "ann.class must be a string"),
    (_set(["format_version"], 1), "old pickle format"),
    (_set(["format_version"], "2"), "in file format '2'"),
]


@pytest.mark.parametrize("edit, message", FORGED_HEADERS)
def test_forged_header_is_refused(good, ann, tmp_path, edit, message):
    path = _forge(good, tmp_path / "f.fxsnn", header=edit)
    with pytest.raises(fxsnn.io.SaveFileError, match=message):
        fxsnn.load(path, model=ann)


def _replace(key, value):
    return lambda t: t.__setitem__(key, value)


FORGED_TENSORS = [
    (_replace("relu.delta_b", torch.zeros(5)), r"'relu.delta_b' is torch.float32 \(5,\) in the file"),
    (_replace("relu.theta_pre", torch.zeros(4, dtype=torch.float64)), "float64"),
    (_replace("../../x", torch.zeros(1)), r"'../../x' is unexpected in the file"),
    (lambda t: t.pop("conv1.weight"), "'conv1.weight' is missing from the file"),
    (_replace("relu.theta_pre", torch.tensor([1.0, float("nan"), 1.0, 1.0])), "finite and > 0"),
    (_replace("relu.theta_pre", -torch.ones(4)), "finite and > 0"),
    (_replace("relu.theta_pre", torch.ones(9)), r"channels \(4\) do not match its θ tensor \(\(9,\)\)"),
]


@pytest.mark.parametrize("edit, message", FORGED_TENSORS)
def test_forged_tensors_are_refused(good, ann, tmp_path, edit, message):
    path = _forge(good, tmp_path / "t.fxsnn", tensors=edit)
    with pytest.raises(fxsnn.io.SaveFileError, match=message):
        fxsnn.load(path, model=ann)


def test_wrong_model_names_the_first_mismatch(good, tmp_path):
    from helpers import fanout_net

    with pytest.raises(
        fxsnn.io.SaveFileError,
        match="cannot be rebuilt from the model you passed: .*site '1' that the file does not record",
    ):
        fxsnn.load(good, model=fanout_net())
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        fxsnn.load(good, model="helpers:tiny_resnet")


class _Gadget:
    def __reduce__(self):
        return (_ran, ("gadget",))


RAN = []


def _ran(what):
    RAN.append(what)


def _gadget_bytes():
    buf = io.BytesIO()
    torch.save({"module": _Gadget()}, buf)
    return buf.getvalue()


def _zip(path, members, *, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_pickle_gadgets_are_never_executed(good, ann, tmp_path):
    header = json.loads(zipfile.ZipFile(good).read("fxsnn.json"))
    gadget = _gadget_bytes()
    tensors = zipfile.ZipFile(good).read("tensors.safetensors")
    cases = {
        # today's format (1): header + pickled model.pt
        "old": ({"fxsnn.json": json.dumps({**header, "format_version": 1}), "model.pt": gadget}, "old pickle format"),
        # a gadget where the tensors belong, with a matching checksum
        "blob": (
            {
                "fxsnn.json": json.dumps(
                    {**header, "sha256": __import__("hashlib").sha256(gadget).hexdigest(), "bytes": len(gadget)}
                ),
                "tensors.safetensors": gadget,
            },
            "tensor data is unreadable",
        ),
        # a valid file with a gadget member added beside it
        "extra": (
            {"fxsnn.json": json.dumps(header), "tensors.safetensors": tensors, "model.pt": gadget},
            "unexpected member 'model.pt'",
        ),
        "traversal": (
            {"fxsnn.json": json.dumps(header), "tensors.safetensors": tensors, "../../evil.py": b"x"},
            "unexpected member",
        ),
    }
    for name, (members, message) in cases.items():
        path = _zip(tmp_path / f"{name}.fxsnn", members)
        with pytest.raises(fxsnn.io.SaveFileError, match=message):
            fxsnn.load(path, model=ann)
        with pytest.raises(fxsnn.io.SaveFileError):
            fxsnn.io.read_header(path) if name != "blob" else fxsnn.load(path, model=ann)
    assert RAN == [] and not (tmp_path.parent / "evil.py").exists()


def test_malformed_archives(good, ann, tmp_path):
    header = zipfile.ZipFile(good).read("fxsnn.json")
    tensors = zipfile.ZipFile(good).read("tensors.safetensors")
    cases = [
        ({"fxsnn.json": header, "tensors.safetensors": tensors}, zipfile.ZIP_DEFLATED, "compressed"),
        ({"fxsnn.json": b"[" * 100_000 + b"]" * 100_000, "tensors.safetensors": b""}, 0, "header is unreadable"),
        (
            {"fxsnn.json": b'{"format": "fxsnn.network", "x": ' + b"9" * 5000 + b"}", "tensors.safetensors": b""},
            0,
            "header is unreadable",
        ),
        ({"fxsnn.json": b"[1, 2]", "tensors.safetensors": b""}, 0, "does not describe an fxsnn network"),
        ({"fxsnn.json": b"\xff\xfe", "tensors.safetensors": b""}, 0, "header is unreadable"),
        ({"fxsnn.json": header}, 0, "no tensors.safetensors"),
    ]
    for i, (members, compress, message) in enumerate(cases):
        path = _zip(tmp_path / f"m{i}.fxsnn", members, compress=compress)
        with pytest.raises(fxsnn.io.SaveFileError, match=message):
            fxsnn.load(path, model=ann)


def test_a_recorded_spec_is_never_imported_unless_named(tmp_path, monkeypatch, ann):
    (tmp_path / "planted_mod.py").write_text("import sys\nsys.modules['planted_ran'] = True\ndef net():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = fxsnn.save(
        P.normalize(fxsnn.trace(ann)), tmp_path / "p.fxsnn", model_spec="planted_mod:net", model_args={"depth": 20}
    )
    h = fxsnn.io.read_header(path)
    assert h["ann"] == {"class": "GraphModule", "spec": "planted_mod:net", "args": {"depth": 20}}
    for kwargs in ({}, {"model": ann}, {"model_spec": "helpers:tiny_resnet"}):
        try:
            fxsnn.load(path, **kwargs)
        except fxsnn.io.SaveFileError:
            pass
    assert "planted_ran" not in sys.modules and "planted_mod" not in sys.modules
    with pytest.raises(TypeError, match="model_args must be JSON data"):
        fxsnn.save(ann, tmp_path / "x.fxsnn", model_spec="a:b", model_args={"f": print})
    with pytest.raises(ValueError, match="model_spec must look like"):
        fxsnn.save(ann, tmp_path / "x.fxsnn", model_spec="a:b; rm -rf /")


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:4]):
            yield from _paths(v, prefix + (i,))


JUNK = [None, True, -1, 0, 2**63, 1e308, float("nan"), "", "spike", "os.system", [], [None], {}, {"type": "QCFS"}]


def test_random_header_mutations_never_crash_or_run_code(good, ann, tmp_path):
    """Fuzz: any value anywhere in the record replaced by junk gives SaveFileError or the exact network."""
    import random

    header = json.loads(zipfile.ZipFile(good).read("fxsnn.json"))
    paths = [p for p in _paths(header) if p and p[0] not in ("sha256", "bytes", "code", "summary", "meta")]
    rng = random.Random(0)
    x = batches(1, 4, seed=3)[0][0]
    want = fxsnn.load(good, model=ann)
    with torch.no_grad():
        ref = want(x)
    outcomes = {"refused": 0, "loaded": 0}
    for i in range(150):
        path, junk = rng.choice(paths), rng.choice(JUNK)
        f = _forge(good, tmp_path / f"z{i}.fxsnn", header=_set(list(path), junk))
        try:
            back = fxsnn.load(f, model=ann)
        except fxsnn.io.SaveFileError:
            outcomes["refused"] += 1
            continue
        outcomes["loaded"] += 1
        with torch.no_grad():
            assert torch.equal(back(x), ref), (path, junk)
    assert outcomes["refused"] > 100 and RAN == []
