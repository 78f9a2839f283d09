"""The ResNet-20 benchmark scripts keep their command lines (they need ../shared/data to do real work)."""

import importlib.util
import subprocess
import sys
import types
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


def test_teacher_study_lists_its_recipes_and_refuses_an_unknown_one():
    run = [sys.executable, "benchmarks/teacher_study.py"]
    proc = subprocess.run([*run, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "im-pl-0.3-2" in proc.stdout, proc.stderr
    proc = subprocess.run([*run, "--recipes", "oracle"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "invalid choice: 'oracle'" in proc.stderr


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
    text = "\n".join(mod._label_free_table(rows, "python benchmarks/cifar10_resnet20.py --label-free-only"))
    assert "| 4 | 80.00 | 79.50 | -0.50 | 100.0 / 110.0 |" in text
    assert "20.0 ANN passes" in text and "picks for it (`'im'` and `'labels'`;" in text
    start, end = mod.LABEL_FREE  # the section --label-free-only rewrites alone
    assert text.strip("\n").startswith(start) and text.endswith(end) and "--label-free-only`" in text


def test_label_free_only_rewrites_only_its_section(tmp_path):
    mod = _load("cifar10_resnet20")
    start, end = mod.LABEL_FREE
    page = (ROOT / "docs" / "results.md").read_text()
    assert page.count(start) == 1 and page.count(end) == 1 and page.index(start) < page.index(mod.NOTES)
    doc = tmp_path / "results.md"
    doc.write_text(f"# table\n\n{start}\nold rows\n{end}\n\n{mod.NOTES}\nnotes\n")
    rows = {("full", 2): (0.70, 90.0), ("full (distill)", 2): (0.69, 99.0)}
    mod.replace_section(doc, mod.label_free_section(rows, "cmd"), start, end)
    out = doc.read_text()
    assert "old rows" not in out and "| 2 | 70.00 | 69.00 | -1.00 | 90.0 / 99.0 |" in out
    assert out.startswith("# table\n\n" + start) and out.endswith(f"{end}\n\n{mod.NOTES}\nnotes\n")


def test_the_time_target_is_checked_on_the_default_full_conversion_at_T4():
    mod = _load("cifar10_resnet20")
    args = types.SimpleNamespace(T=[4])
    met = "\n".join(mod._target_checks({("full", 4): (0.83, 101.0)}, args))
    assert "T = 4: the default full conversion took 101.0 s vs ≤ 120 s — met" in met
    missed = "\n".join(mod._target_checks({("full", 4): (0.83, 130.5)}, args))
    assert "took 130.5 s vs ≤ 120 s — missed by 10.5 s" in missed
    assert "T = 4: full 83.00 % vs ≥ 82.0 % — met" in missed


def test_rate_vs_spike_rewrites_only_its_section_of_the_correctness_page(tmp_path):
    """docs/correctness.md's measured section is regenerated by one command; the rest of the page is kept."""
    mod = _load("rate_vs_spike")
    page = (ROOT / "docs" / "correctness.md").read_text()
    assert mod.BEGIN in page and mod.END in page and "python benchmarks/rate_vs_spike.py --write" in page
    doc = tmp_path / "c.md"
    doc.write_text(f"head\n{mod.BEGIN}\nold\n{mod.END}\ntail\n")
    r = [("net", "0.1", 1, 10, mod.pct(1, 10), "-", "-", 0)]
    text = mod.render(r, [("relu", 10, "1 (10 %)")], (2,), ["T = 2: conversion 1 s"], " --T 2")
    mod.write_section(text, doc)
    out = doc.read_text()
    assert out.startswith("head\n" + mod.BEGIN) and out.endswith(mod.END + "\ntail\n") and "old" not in out
    assert "`python benchmarks/rate_vs_spike.py --T 2`" in out and "| net " in out and "10.0000 %" in out
    doc.write_text("no markers")
    with pytest.raises(SystemExit, match="markers of the generated section are missing"):
        mod.write_section(text, doc)
