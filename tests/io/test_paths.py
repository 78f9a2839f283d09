"""One output-path check (fxsnn.io.paths.check_writable) serves fxsnn.save, the report writers and the CLI."""

import os

import pytest
import torch

import fxsnn
from fxsnn.io.paths import check_writable


def test_check_writable_names_the_path_and_the_fix(tmp_path):
    assert check_writable(tmp_path / "ok.bin") == str(tmp_path / "ok.bin")
    assert not (tmp_path / "ok.bin").exists() and os.listdir(tmp_path) == []  # the probe is removed
    with pytest.raises(FileNotFoundError, match=r"^.*/no/x.bin: directory .*/no does not exist; create it first"):
        check_writable(tmp_path / "no" / "x.bin")
    with pytest.raises(IsADirectoryError, match=r"is a directory; give a file name, e.g. .*/out$"):
        check_writable(tmp_path)
    with pytest.raises(OSError, match=r"^/proc/x.bin: cannot write in /proc \(.*\); choose another path$"):
        check_writable("/proc/x.bin")


def test_save_and_report_writers_check_before_writing(tmp_path):
    gm = fxsnn.trace(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU()))
    with pytest.raises(IsADirectoryError, match="is a directory"):
        fxsnn.save(gm, tmp_path)
    with pytest.raises(OSError, match="cannot write in /proc"):
        fxsnn.save(gm, "/proc/net.fxsnn")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        fxsnn.summary(gm).to_csv(tmp_path)
