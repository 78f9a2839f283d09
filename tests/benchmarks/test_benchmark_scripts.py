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


@pytest.mark.parametrize("script", ["cifar10_resnet20.py", "validate_defaults.py", "stage2_study.py"])
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


def test_stage2_study_overrides_parse_and_bad_ones_are_named():
    mod = _load("stage2_study")
    from fxsnn.calibration import Stage2Config

    assert mod.parse_overrides("lr=0.003 surrogate=ste", Stage2Config) == {"lr": 0.003, "surrogate": "ste"}
    with pytest.raises(SystemExit, match="not name=value"):
        mod.parse_overrides("lr", Stage2Config)
    with pytest.raises(ValueError, match="surrogate"):
        mod.parse_overrides("surrogate=sigmoid", Stage2Config)
    for v in mod.VARIANTS:  # the study's own variants are valid
        mod.parse_overrides(v, Stage2Config)


def test_regenerated_page_keeps_the_backbone_section_and_the_notes():
    mod = _load("cifar10_resnet20")
    start, end = mod.BACKBONE
    old = f"# old table\n\n{start}\nQCFS rows\n{end}\n\n{mod.NOTES}\n## notes\nkept\n"
    new = mod.merge_page("# new table\n", old)
    assert new.startswith("# new table\n") and "old table" not in new
    assert f"{start}\nQCFS rows\n{end}" in new and new.endswith(f"{mod.NOTES}\n## notes\nkept\n")
    assert new.index(end) < new.index(mod.NOTES)
    assert mod.merge_page("# t\n", "") == "# t\n\n" + mod.NOTES + "\n"


def test_label_free_rows_are_rendered_against_the_default():
    mod = _load("cifar10_resnet20")
    rows = {("full", 4): (0.80, 100.0), ("full (distill)", 4): (0.795, 110.0), ("ANN pass", 0): (0.81, 5.0)}
    text = "\n".join(mod._label_free_table(rows))
    assert "| 4 | 80.00 | 79.50 | -0.50 | 100.0 / 110.0 |" in text
    assert "20.0 ANN passes" in text
