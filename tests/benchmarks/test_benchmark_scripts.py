"""The ResNet-20 benchmark scripts keep their command lines (they need ../shared/data to do real work)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", ["cifar10_resnet20.py", "validate_defaults.py"])
def test_help(script):
    proc = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "--T" in proc.stdout, proc.stderr


def test_validation_variants_parse_and_bad_ones_are_named():
    parse = _load("validate_defaults").parse_variant
    assert parse("") == {}
    assert parse("stage1.train_theta=False stage2.lr=0.01 stage1.bn_mode=train") == {
        "stage1.train_theta": False,
        "stage2.lr": 0.01,
        "stage1.bn_mode": "train",
    }
    with pytest.raises(SystemExit, match="not name=value"):
        parse("stage1.train_theta")
    with pytest.raises(TypeError, match="stage1.train.epochs"):  # the valid names are listed
        parse("stage1.epoch=3")
    with pytest.raises(ValueError, match="stage1.bn_mode"):
        parse("stage1.bn_mode=sideways")
