"""``fxsnn convert --leaf-module NAME`` / ``--concrete-arg NAME=VALUE`` (issue 10, item 5)."""

from __future__ import annotations

import sys

import numpy as np

import fxsnn
from fxsnn import cli

NET = (
    "import torch\n"
    "class Block(torch.nn.Module):\n"
    "    def forward(self, x):\n"
    "        return x if x.sum() > 0 else -x\n"
    "class Net(torch.nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.conv, self.block, self.fc = torch.nn.Conv2d(1, 2, 3), Block(), torch.nn.Linear(2, 3)\n"
    "    def forward(self, x, pool=True):\n"
    "        h = self.block(torch.relu(self.conv(x)))\n"
    "        return self.fc(h.mean((2, 3)) if pool else h)\n"
    "def net():\n"
    "    return Net()\n"
)


def test_leaf_module_and_concrete_arg_reach_convert_and_the_saved_file(tmp_path, capsys, monkeypatch):
    (tmp_path / "cli_leafy_nets.py").write_text(NET)
    g = np.random.RandomState(0)
    np.savez(tmp_path / "d.npz", x=g.randn(8, 1, 6, 6).astype("float32"), y=g.randint(0, 3, 8))
    monkeypatch.chdir(tmp_path)
    base = ["convert", "--model", "cli_leafy_nets:net", "--data", "d.npz", "--T", "2", "--method", "fspc"]
    assert cli.main(base + ["--out", "a.fxsnn"]) == 1
    assert "--leaf-module block" in capsys.readouterr().err  # the trace error names the flag that fixes it
    argv = base + ["--leaf-module", "block", "--concrete-arg", "pool=True", "--allow-analog", "--out", "b.fxsnn"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "saved b.fxsnn" in capsys.readouterr().out
    assert fxsnn.io.read_header("b.fxsnn")["leaf_modules"] == ["block"]
    ann = fxsnn.trace(sys.modules["cli_leafy_nets"].net(), leaf_modules=["block"], concrete_args={"pool": True})
    snn = fxsnn.load("b.fxsnn", model=ann)  # the user's own trace is copied, not traced again
    assert [s.name for s in fxsnn.find_sites(snn)] == ["relu"]
