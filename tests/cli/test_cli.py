"""The fxsnn command line: every command end to end on a tiny model, --help everywhere, and exit codes 2 for bad input."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import run_cli as run
from helpers import tiny_resnet

import fxsnn
from fxsnn import cli
from fxsnn.cli import commands

SPEC = "helpers:tiny_resnet"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    g = np.random.RandomState(0)
    np.savez(d / "data.npz", x=g.randn(48, 1, 8, 8).astype("float32"), y=g.randint(0, 3, 48))
    np.savez(d / "noxy.npz", images=np.zeros((2, 1, 8, 8)), labels=np.zeros(2))
    torch.save(tiny_resnet().state_dict(), d / "w.pt")
    code = cli.main(
        [
            "convert",
            "--model",
            SPEC,
            "--weights",
            str(d / "w.pt"),
            "--data",
            str(d / "data.npz"),
            "--T",
            "2",
            "--method",
            "fspc",
            "--batch-size",
            "16",
            "--out",
            str(d / "snn.fxsnn"),
        ]
    )
    assert code == 0
    return d


def test_help_on_every_command(capsys):
    for argv in (["--help"], ["convert", "--help"], ["eval", "--help"], ["inspect", "--help"], ["analyze", "--help"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: fxsnn") and "exit codes" in out
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"fxsnn {fxsnn.__version__}"


def test_console_script_is_installed():
    exe = shutil.which("fxsnn", path=os.path.dirname(sys.executable)) or shutil.which("fxsnn")
    assert exe, "the fxsnn console script is not on PATH; pip install -e . declares it in pyproject.toml"
    res = subprocess.run([exe, "inspect", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "usage: fxsnn inspect" in res.stdout
    res = subprocess.run([exe, "inspect", "/nonexistent/file.fxsnn"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "no such file" in res.stderr


def test_convert_writes_a_loadable_snn(files):
    snn = fxsnn.load(files / "snn.fxsnn", model_spec=SPEC)  # the spec convert recorded, confirmed
    assert fxsnn.modes.time_steps(snn) == 2 and fxsnn.summary(snn).stage == "ParallelIF"
    assert fxsnn.io.read_header(files / "snn.fxsnn")["delta_b_params"] == 8


def test_inspect(files, capsys, tmp_path):
    code, out, err = run(["inspect", files / "snn.fxsnn", "--csv", tmp_path / "s.csv"], capsys)
    assert code == 0
    assert "stage=ParallelIF, T=2" in out and "converted with method=fspc, T=2" in out
    assert "what each stage did:" in out and "θ (running max): 3 batches; no DA" in out  # the recorded report
    assert "method 'fspc' has no Stage 1" in out and "method 'fspc' has no Stage 2" in out
    assert "Δb parameters: 8" in out and "def forward" in out and "self.relu_1(add)" in out
    assert (tmp_path / "s.csv").read_text().startswith("site,kind,pattern")
    code, out, _ = run(["inspect", files / "snn.fxsnn", "--no-graph"], capsys)
    assert code == 0 and "def forward" not in out
    fxsnn.save(tiny_resnet(), tmp_path / "ann.fxsnn")  # a plain module, not a GraphModule
    code, out, err = run(["inspect", tmp_path / "ann.fxsnn"], capsys)
    assert code == 0, err
    assert "parameters=" in out.splitlines()[0] and "ReLU" in out and "(conv1): Conv2d" in out


def test_eval_matches_the_api(files, capsys):
    code, out, err = run(
        [
            "eval",
            "--snn",
            files / "snn.fxsnn",
            "--model",
            SPEC,
            "--weights",
            files / "w.pt",
            "--data",
            files / "data.npz",
            "--mode",
            "rate",
        ],
        capsys,
    )
    assert code == 0
    x, y = np.load(files / "data.npz")["x"], np.load(files / "data.npz")["y"]
    data = [(torch.from_numpy(x), torch.from_numpy(y).long())]
    ann = fxsnn.evaluate(tiny_resnet(), data, progress=False).top1
    snn = fxsnn.evaluate(fxsnn.load(files / "snn.fxsnn", model=tiny_resnet()), data, progress=False).top1
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert f"{100 * ann:.2f}" in lines["ANN"] and f"{100 * snn:.2f}" in lines["SNN"] and "(rate)" in lines["SNN"]
    assert "48" in lines["ANN"]


def test_analyze_writes_tables_and_plots(files, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    code, out, err = run(
        [
            "analyze",
            "--snn",
            files / "snn.fxsnn",
            "--model",
            SPEC,
            "--weights",
            files / "w.pt",
            "--data",
            files / "data.npz",
            "--layers",
            "relu_1,0",
            "--batches",
            "2",
            "--batch-size",
            "16",
            "--e-ac",
            "0.5",
            "--plot",
            tmp_path / "d.png",
            "--plot-layers",
            tmp_path / "l.png",
            "--csv",
            tmp_path / "s.csv",
            "--energy-csv",
            tmp_path / "e.csv",
            "--json",
            tmp_path / "r.json",
        ],
        capsys,
    )
    assert code == 0, err
    assert "32 inputs" in out and "E_AC = 0.5 pJ" in out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert [s["site"] for s in rep["sites"]] == ["relu", "relu_1"] and rep["totals"]["e_ac_pj"] == 0.5
    assert (tmp_path / "d.png").stat().st_size > 10_000 and (tmp_path / "l.png").stat().st_size > 10_000
    assert (tmp_path / "e.csv").read_text().splitlines()[0].startswith("layer,op,input")


def test_model_spec_from_the_current_directory(files, capsys, tmp_path, monkeypatch):
    (tmp_path / "cli_user_nets.py").write_text(
        "import torch\n"
        "def small(width=3):\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(1, width, 3), torch.nn.ReLU(), torch.nn.Flatten(),\n"
        "                               torch.nn.Linear(width * 36, 3))\n"
    )
    monkeypatch.chdir(tmp_path)
    code, out, err = run(
        [
            "convert",
            "--model",
            "cli_user_nets:small",
            "--model-arg",
            "width=2",
            "--data",
            files / "data.npz",
            "--T",
            "3",
            "--method",
            "fspc_da",
            "--out",
            "u.fxsnn",
        ],
        capsys,
    )
    assert code == 0, err
    assert "no --weights given" in err and "saved u.fxsnn" in out
    assert fxsnn.io.read_header("u.fxsnn")["ann"] == {
        "class": "GraphModule",
        "spec": "cli_user_nets:small",
        "args": {"width": 2},
    }
    assert fxsnn.summary(fxsnn.load("u.fxsnn", model=sys.modules["cli_user_nets"].small(width=2)))[0].channels == 2
    assert str(tmp_path) not in sys.path  # the CLI puts sys.path back


def test_convert_full_runs_both_stages(files, capsys, tmp_path):
    code, out, err = run(
        [
            "convert",
            "--model",
            SPEC,
            "--weights",
            files / "w.pt",
            "--data",
            files / "data.npz",
            "--T",
            "2",
            "--method",
            "full",
            "--set",
            "stage1.epochs=1",
            "--set",
            "stage2.train.epochs=1",
            "--set",
            "stage2.holdout=None",
            "--batch-size",
            "16",
            "--out",
            tmp_path / "full.fxsnn",
        ],
        capsys,
    )
    assert code == 0, err
    snn = fxsnn.load(tmp_path / "full.fxsnn", model=tiny_resnet())
    assert any(float(n.delta_b.abs().max()) > 0 for n in fxsnn.modes.neurons(snn).values())  # Stage 2 trained Δb
    assert snn.meta["fxsnn.convert"]["method"] == "full"
    report = out.split("what each stage did (method=full, T=2):\n", 1)[1]
    assert report.startswith(str(snn.meta["fxsnn.convert"]["stages"]))  # the table, as saved
    lines = report.splitlines()
    assert lines[0].split()[:2] == ["stage", "ran"] and "train loss (start → end)" in lines[0]
    assert [line.split()[0] for line in lines[2:5]] == ["front", "Stage", "Stage"]
    assert "BN statistics: 3 batches" in lines[3] and "1 of 1" in lines[3] and "3 of 3" in lines[4]
    assert "stage 3 of 3, Stage 2: tune_delta_b epoch 1 of 1" in err  # overall progress in the bars


def test_label_free_convert_takes_a_file_without_labels_and_a_labelled_one_is_refused(files, capsys, tmp_path):
    x = np.load(files / "data.npz")["x"]
    np.savez(tmp_path / "x_only.npz", x=x)
    base = ["convert", "--model", SPEC, "--weights", files / "w.pt", "--data", tmp_path / "x_only.npz", "--T", "2"]
    base += ["--method", "full", "--set", "stage1.epochs=1", "--set", "stage2.holdout=None", "--batch-size", "16"]
    label_free = ["--set", "stage1.objective=distill", "--set", "stage2.objective=distill"]
    code, out, err = run([*base, *label_free, "--out", tmp_path / "lf.fxsnn"], capsys)
    assert code == 0, err
    assert f"--data {tmp_path / 'x_only.npz'}: all 48 samples, no labels" in out
    assert (
        "stage 2 of 3, Stage 1" in err
        and "teacher (im): im_adapted_teacher epoch 1 of 1" in err
        and "cover only" not in err
    )
    snn = fxsnn.load(tmp_path / "lf.fxsnn", model=tiny_resnet())
    assert snn.meta["fxsnn.convert"]["stages"]["Stage 1"].steps > 0
    code, _, err = run([*base, "--out", tmp_path / "labels.fxsnn"], capsys)  # the default objective needs y
    assert code == 2 and "must hold arrays named 'x'" in err and "stage1.objective=distill" in err
    assert not (tmp_path / "labels.fxsnn").exists()
    fspc = ["convert", "--model", SPEC, "--weights", files / "w.pt", "--data", tmp_path / "x_only.npz", "--T", "2"]
    code, _, err = run([*fspc, "--method", "fspc", "--out", tmp_path / "fspc.fxsnn"], capsys)  # trains nothing
    assert code == 0, err


def test_image_folder_data(capsys, tmp_path, monkeypatch):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((10, 10, 3), 40 * i, dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "m.py").write_text(
        "import torch\n"
        "def rgb():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),\n"
        "                               torch.nn.Linear(2 * 36, 2))\n"
    )
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["eval", "--model", "m:rgb", "--data", "imgs", "--image-size", "8"], capsys)
    assert code == 0, err
    assert out.splitlines()[2].split()[-1] == "6"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["convert", "--model", "no_such_pkg.nets:f"], "cannot import module 'no_such_pkg.nets'"),
        (["convert", "--model", "helpers:tiny_resnt"], "did you mean tiny_resnet"),
        (["convert", "--model", "resnet181"], "unknown model 'resnet181'.*Did you mean resnet18"),
        (
            ["convert", "--model", "helpers:fanout_net", "--weights", "{d}/w.pt"],
            "weights in .* do not match the model Sequential",
        ),
        (["convert", "--model", SPEC, "--weights", "{d}/snn.fxsnn"], "it must be a state dict"),
        (["convert", "--model", SPEC, "--model-arg", "depth"], "NAME=VALUE"),
        (["convert", "--model", SPEC, "--model-arg", "depth=3"], r"calling helpers:tiny_resnet\(depth=3\) failed"),
        (["convert", "--model", SPEC, "--data", "{d}/noxy.npz"], r"must hold arrays named 'x'.*\['images', 'labels'\]"),
        (["convert", "--model", SPEC, "--data", "{d}/empty_images"], "found no images under"),
        (["convert", "--model", SPEC, "--data", "{d}/absent.npz"], "does not exist"),
        (["convert", "--model", SPEC, "--data", "{d}/w.pt"], "unknown data format"),
        (["convert", "--model", SPEC, "--out", "{d}/no/such/dir/x.fxsnn"], "directory .* does not exist; create it"),
        (["convert", "--model", SPEC, "--out", "{d}"], r"--out .* is a directory; give a file name"),
        (["convert", "--model", SPEC, "--out", "/proc/snn.fxsnn"], r"--out /proc/snn.fxsnn: cannot write in /proc"),
        (["convert", "--model", SPEC, "--model-arg", "s={{1}}"], "--model-arg values must be numbers"),
        (
            ["eval", "--snn", "{d}/snn.fxsnn", "--data", "{d}/data.npz"],
            "give the ANN it was converted from with --model SPEC.*It records --model helpers:tiny_resnet",
        ),
        (
            ["eval", "--snn", "{d}/snn.fxsnn", "--model", "helpers:fanout_net", "--data", "{d}/data.npz"],
            "cannot be rebuilt from the model you passed: .*site '1' that the file does not record",
        ),
        (["convert", "--model", SPEC, "--set", "stage1.epoch=1"], "unknown option 'stage1.epoch'; valid options: "),
        (["convert", "--model", SPEC, "--set", "stage1.epochs=0"], "stage1.train.epochs must be an integer >= 1"),
        (["convert", "--model", SPEC, "--set", "stage1.epochs"], "not of the form KEY=VALUE"),
        (["convert", "--model", SPEC, "--set", "stage2.mode=serial"], r"stage2.mode must be one of \('auto', "),
        (["convert", "--model", SPEC, "--T", "0"], "--T must be >= 1"),
        (["eval", "--data", "{d}/data.npz"], "give --snn FILE, --model SPEC, or both"),
        (["eval", "--model", SPEC, "--data", "{d}/data.npz", "--device", "gpu0"], "is not a torch device"),
        (["eval", "--snn", "{d}/w.pt", "--data", "{d}/data.npz"], "use torch.load"),
        (["eval", "--snn", "{d}/data.npz", "--data", "{d}/data.npz"], "has no fxsnn.json header"),
        (["inspect", "{d}/garbage.fxsnn"], "not an fxsnn network file"),
        # the loaders name their own arguments; the command line shows its flags
        (["eval", "--model", SPEC, "--data", "{d}/flat.npz", "--nhwc"], r"--nhwc: nhwc=True needs 4-D images"),
        (["eval", "--model", SPEC, "--data", "{d}/data.npz", "--limit", "0"], "--limit: limit must be >= 1; got 0"),
        (["eval", "--model", SPEC, "--data", "{d}/data.npz", "--batch-size", "0"], "--batch-size: batch_size must be"),
        (["eval", "--model", SPEC, "--data", "{d}/data.npz", "--mean", "0.5"], "--mean/--std: give mean and std"),
        (
            ["eval", "--model", SPEC, "--data", "{d}/data.npz", "--mean", "0", "0", "--std", "1", "1"],
            r"--mean/--std: mean/std give 2 channels but x has shape \(48, 1, 8, 8\)",
        ),
        (
            ["analyze", "--snn", "{d}/snn.fxsnn", "--model", SPEC, "--data", "{d}/data.npz", "--layers", "layer9"],
            "no activation site named 'layer9'. The sites are: relu, relu_1",
        ),
        (
            ["analyze", "--snn", "{d}/snn.fxsnn", "--model", SPEC, "--data", "{d}/data.npz", "--layers", "7"],
            "out of range",
        ),
        (
            [
                "analyze",
                "--snn",
                "{d}/snn.fxsnn",
                "--model",
                SPEC,
                "--data",
                "{d}/data.npz",
                "--plot",
                "{d}/nodir/p.png",
            ],
            "--plot .*nodir/p.png: directory .* does not exist",
        ),
        (
            ["analyze", "--snn", "{d}/snn.fxsnn", "--model", SPEC, "--data", "{d}/data.npz", "--plot", "{d}/p.jpg"],
            "ending in .png",
        ),
        (
            ["analyze", "--snn", "{d}/snn.fxsnn", "--model", SPEC, "--data", "{d}/data.npz", "--e-mac", "-1"],
            "e_mac must be",
        ),
        (
            ["analyze", "--snn", "{d}/snn.fxsnn", "--model", "helpers:fanout_net", "--data", "{d}/data.npz"],
            "pass the ANN this SNN was converted from",
        ),
    ],
)
def test_bad_input_exits_2_with_a_message(files, capsys, argv, message):
    (files / "empty_images" / "cat").mkdir(parents=True, exist_ok=True)
    (files / "garbage.fxsnn").write_bytes(b"not a zip at all")
    np.savez(files / "flat.npz", x=np.zeros((4, 64), dtype="float32"), y=np.zeros(4, dtype=int))
    argv = [a.format(d=files) for a in argv]
    if argv[0] == "convert":
        defaults = {"--data": str(files / "data.npz"), "--out": str(files / "out.fxsnn")}
        argv += [x for k, v in defaults.items() if k not in argv for x in (k, v)]
    code, out, err = run(argv, capsys)
    assert code == 2, (out, err)
    assert re.search(message, err), err
    assert err.startswith(f"fxsnn {argv[0]}: error: ") or "note:" in err
    assert not (files / "out.fxsnn").exists()


def test_usage_errors_exit_2(capsys):
    for argv in ([], ["convert", "--model", SPEC], ["frobnicate"], ["inspect"], ["eval", "--data", "x", "--bogus"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
        assert "usage: fxsnn" in capsys.readouterr().err


def test_mis_shaped_data_is_a_data_error_exit_2(files, capsys, tmp_path):
    np.savez(tmp_path / "wrong.npz", x=np.zeros((4, 2, 8, 8), dtype="float32"), y=np.zeros(4, dtype=int))
    code, out, err = run(["eval", "--model", SPEC, "--data", tmp_path / "wrong.npz"], capsys)
    assert code == 2 and "batch 0 of shape (4, 2, 8, 8) does not fit the model" in err and "Traceback" not in err


def test_nan_data_and_zero_std_are_refused_naming_the_flag(files, capsys, tmp_path):
    x = np.zeros((4, 1, 8, 8), dtype="float32")
    x[1, 0, 2, 2] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.zeros(4, dtype=int))
    code, out, err = run(["eval", "--model", SPEC, "--data", tmp_path / "nan.npz"], capsys)
    assert code == 2 and "NaN or ±Inf" in err and "1 of 4 samples" in err
    code, out, err = run(["eval", "--model", SPEC, "--data", files / "data.npz", "--mean", "0", "--std", "0"], capsys)
    assert code == 2 and "--std" in err and "> 0" in err


def test_failures_exit_1_and_traceback_on_request(files, capsys, tmp_path, monkeypatch):
    import fxsnn.report.evaluation

    def broken(*args, **kwargs):  # an unexpected (non-data) failure inside the command
        raise RuntimeError("boom")

    monkeypatch.setattr(fxsnn.report.evaluation, "evaluate", broken)
    argv = ["eval", "--model", SPEC, "--data", files / "data.npz"]
    code, out, err = run(argv, capsys)
    assert code == 1 and "unexpected error: RuntimeError" in err and "--traceback" in err and "Traceback" not in err
    code, out, err = run(argv + ["--traceback"], capsys)
    assert code == 1 and "Traceback (most recent call last)" in err


def test_interrupt_exits_130(files, capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(commands.COMMANDS, "inspect", interrupted)
    code, out, err = run(["inspect", files / "snn.fxsnn"], capsys)
    assert code == 130 and "interrupted" in err


def test_demo_passes_its_arguments_through(capsys, monkeypatch):
    demo = pytest.importorskip("fxsnn.cli.demo")
    seen = {}
    monkeypatch.setattr(demo, "main", lambda argv: seen.setdefault("argv", argv) and 0)
    assert cli.main(["demo", "--T", "2", "--methods", "fspc"]) == 0
    assert seen["argv"] == ["--T", "2", "--methods", "fspc"]


def test_loaders_accept_old_checkpoints_and_random_subsets(tmp_path):
    from fxsnn.io.loaders import load_data, load_weights

    model = tiny_resnet()
    old = {
        "state_dict": {"module." + k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    }
    torch.save(old, tmp_path / "old.th")  # a DataParallel checkpoint from before num_batches_tracked existed
    fresh = load_weights(tiny_resnet(seed=3), tmp_path / "old.th")
    loaded = fresh.state_dict()
    assert all(torch.equal(loaded[k.removeprefix("module.")], v) for k, v in old["state_dict"].items())
    np.savez(tmp_path / "sorted.npz", x=np.arange(20, dtype="float32").reshape(20, 1), y=np.repeat([0, 1], 10))
    first = next(iter(load_data(tmp_path / "sorted.npz", limit=6, batch_size=6)))[1]
    mixed = next(iter(load_data(tmp_path / "sorted.npz", limit=6, batch_size=6, random_subset=True)))[1]
    assert first.tolist() == [0] * 6 and 0 < int(mixed.sum()) < 6


def test_analyze_serial_reports_the_serial_gap(files, capsys, tmp_path):
    base = ["analyze", "--snn", files / "snn.fxsnn", "--model", SPEC, "--weights", files / "w.pt"]
    base += ["--data", files / "data.npz"]
    code, out, err = run(base + ["--json", tmp_path / "plain.json"], capsys)
    assert code == 0, err
    assert "serial IF network" not in out
    assert json.loads((tmp_path / "plain.json").read_text())["totals"]["serial_top1"] is None
    code, out, err = run(base + ["--serial", "--json", tmp_path / "serial.json"], capsys)
    assert code == 0, err
    totals = json.loads((tmp_path / "serial.json").read_text())["totals"]
    x, y = np.load(files / "data.npz")["x"], np.load(files / "data.npz")["y"]
    model = tiny_resnet()
    model.load_state_dict(torch.load(files / "w.pt"))
    snn = fxsnn.load(files / "snn.fxsnn", model=model)
    with torch.no_grad():
        xs = torch.from_numpy(x)
        serial, parallel = fxsnn.passes.to_serial(snn)(xs), snn(xs)
    assert totals["serial_max_abs_logit_diff"] == pytest.approx(float((serial - parallel).abs().max()), rel=1e-5)
    assert totals["serial_top1"] == float((serial.argmax(1) == torch.from_numpy(y)).double().mean())
    assert totals["serial_agreement"] == float((serial.argmax(1) == parallel.argmax(1)).double().mean())
    assert "serial IF network (fxsnn.passes.to_serial, same weights and thresholds) vs this parallel SNN" in out
    with pytest.raises(SystemExit):
        cli.main(["analyze", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert (
        "--serial also run the serial IF network" in help_text and "Expensive: T forward passes per batch" in help_text
    )
