"""benchmarks/qcfs_backbone.py in its smoke form (--quick: tiny data, random when ../shared/data is absent)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("qcfs_backbone", ROOT / "benchmarks" / "qcfs_backbone.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_replaces_only_its_section(tmp_path):
    qb = _module()
    out = tmp_path / "results.md"
    before = "# table\n\n<!-- hand-written notes below this line -->\n\nnotes\n\n"
    out.write_text(before + f"{qb.START}\nstale rows\n{qb.END}\n\nafter\n")
    cmd = [sys.executable, "benchmarks/qcfs_backbone.py", "--quick", "--T", "2", "--threads", "1", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    text = out.read_text()
    assert text.startswith(before) and text.endswith(f"{qb.END}\n\nafter\n") and "stale rows" not in text
    section = text[text.index(qb.START) : text.index(qb.END)]
    assert "python benchmarks/qcfs_backbone.py --quick" in section and "a smoke run" in section
    row = next(line for line in section.splitlines() if line.startswith("| ResNet-20, QCFS L=4 |"))
    assert len(row.split("|")) == 9 and " 2 |" in row  # backbone, QCFS ANN, T, three methods, seconds


def test_write_section_appends_when_the_markers_are_absent(tmp_path):
    qb = _module()
    out = tmp_path / "results.md"
    out.write_text("# table\n")
    qb.write_section(out, f"{qb.START}\nrows\n{qb.END}\n")
    assert out.read_text() == f"# table\n\n{qb.START}\nrows\n{qb.END}\n"
    qb.write_section(out, f"{qb.START}\nnew\n{qb.END}\n")
    assert out.read_text() == f"# table\n\n{qb.START}\nnew\n{qb.END}\n"
