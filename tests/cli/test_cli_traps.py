"""Command-line traps of issue 9: code in the working directory, bad choices before torch, broken pipes, Ctrl-C,
outputs checked before the work and written atomically, and inspect reading the JSON record only."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_resnet

import fxsnn
from fxsnn import cli
from fxsnn.cli import commands

SPEC = "helpers:tiny_resnet"
ROOT = Path(fxsnn.__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parents[1]
PLANT = "import pathlib\npathlib.Path(__file__).with_suffix('.ran').write_text('ran')\n"


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}


def _cli(args, cwd, **kw):
    return subprocess.run(
        [sys.executable, "-m", "fxsnn.cli", *map(str, args)],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("traps")
    g = np.random.RandomState(0)
    np.savez(d / "data.npz", x=g.randn(16, 1, 8, 8).astype("float32"), y=g.randint(0, 3, 16))
    torch.save(tiny_resnet().state_dict(), d / "w.pt")
    argv = ["convert", "--model", SPEC, "--weights", d / "w.pt", "--data", d / "data.npz", "--T", "2"]
    assert cli.main([str(a) for a in argv + ["--method", "fspc", "--out", d / "snn.fxsnn"]]) == 0
    return d


def test_planted_modules_in_the_working_directory_never_run(files, tmp_path):
    from PIL import Image

    for name in ("torchvision", "matplotlib", "tabulate", "helpers"):
        (tmp_path / f"{name}.py").write_text(PLANT)
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "a" / "0.png")
    (tmp_path / "mine.py").write_text(
        PLANT + "import torch\ndef rgb():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU(),"
        " torch.nn.Flatten(), torch.nn.Linear(2 * 36, 1))\n"
    )
    snn = ["--snn", files / "snn.fxsnn", "--model", SPEC, "--weights", files / "w.pt"]
    runs = [
        ["eval", *snn, "--data", files / "data.npz"],
        ["analyze", *snn, "--data", files / "data.npz", "--batches", "1"],
        ["inspect", files / "snn.fxsnn"],
        ["eval", "--model", "mine:rgb", "--data", "imgs", "--image-size", "8"],  # named: only mine.py may run
    ]
    for argv in runs:
        res = _cli(argv, tmp_path)
        assert res.returncode == 0, (argv, res.stderr)
    ran = sorted(p.stem for p in tmp_path.glob("*.ran"))
    assert ran == ["mine"], ran


def test_bad_choices_are_reported_before_torch_is_imported(capsys):
    code = (
        "import sys\nfrom fxsnn.cli import main\n"
        "try:\n    main(['convert', '--model', 'm:f', '--data', 'd', '--out', 'o', '--method', 'QCFS'])\n"
        "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert res.stdout.split() == ["2", "False"], res.stderr
    assert "invalid choice: 'QCFS'" in res.stderr and "fspc_da" in res.stderr
    with pytest.raises(SystemExit) as e:
        cli.main(["convert", "--model", SPEC, "--data", "d", "--out", "o", "--method", "magic"])
    assert e.value.code == 2 and "invalid choice: 'magic'" in capsys.readouterr().err
    from fxsnn.cli.parser import METHODS, RECIPES
    from fxsnn.config import METHODS as CONFIG_METHODS
    from fxsnn.config import RECIPES as CONFIG_RECIPES

    assert METHODS == CONFIG_METHODS and RECIPES == tuple(CONFIG_RECIPES)


def test_a_closed_pipe_is_not_an_error(files, capsys, monkeypatch):
    res = subprocess.Popen(
        [sys.executable, "-m", "fxsnn.cli", "inspect", str(files / "snn.fxsnn")],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    res.stdout.close()  # `| head -0`: the reader is gone before the first write
    err = res.stderr.read()
    assert res.wait(timeout=300) == 141
    assert "Error" not in err and "Traceback" not in err and "Exception ignored" not in err, err

    def closed(args):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setitem(commands.COMMANDS, "inspect", closed)
    assert cli.main(["inspect", str(files / "snn.fxsnn")]) == 141
    assert "unexpected error" not in capsys.readouterr().err


def test_ctrl_c_during_start_up_prints_no_traceback(files, capsys, monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "_startup", interrupted)
    assert cli.main(["inspect", str(files / "snn.fxsnn")]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "fxsnn inspect: interrupted" and "Traceback" not in err
    monkeypatch.setattr(commands, "build_parser", interrupted)
    assert cli.main(["inspect", "x"]) == 130 and "Traceback" not in capsys.readouterr().err


def test_analyze_json_leaves_no_file_when_the_write_fails(files, capsys, monkeypatch, tmp_path):
    argv = ["analyze", "--snn", files / "snn.fxsnn", "--model", SPEC, "--data", files / "data.npz"]
    argv = [str(a) for a in argv + ["--json", tmp_path / "r.json"]]

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert cli.main(argv) == 2
    assert "--json" in capsys.readouterr().err and list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setattr(fxsnn.report.Report, "to_dict", lambda self: {"x": object()})
    assert cli.main(argv) == 1 and list(tmp_path.iterdir()) == []  # serialised before anything is written


def test_inspect_reads_the_record_only(files, tmp_path, capsys, monkeypatch):
    from fxsnn.io.archive import read_archive, write_archive

    header, blob = read_archive(str(files / "snn.fxsnn"))
    header = {k: v for k, v in header.items() if k not in ("sha256", "bytes")}
    header["ann"] = {"class": "GraphModule", "spec": "planted_spec:net", "args": {"depth": 3}}
    header["code"] = "def forward(self, x):\n    \x1b[2Jreturn x"
    write_archive(str(tmp_path / "f.fxsnn"), header, blob)
    (tmp_path / "planted_spec.py").write_text(PLANT)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["inspect", "f.fxsnn"]) == 0
    out = capsys.readouterr().out
    assert "model: --model planted_spec:net --model-arg depth=3" in out and "?[2Jreturn x" in out and "\x1b" not in out
    assert cli.main(["eval", "--snn", "f.fxsnn", "--data", str(files / "data.npz")]) == 2
    assert "It records --model planted_spec:net --model-arg depth=3" in capsys.readouterr().err
    assert not (tmp_path / "planted_spec.ran").exists()
    json.dumps(header)  # the record is plain JSON data
