"""The benchmark scripts of issue 4 in their smoke form (tiny sizes): they must keep running. No timing is asserted."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def test_speed_benchmark_smoke(tmp_path):
    out = tmp_path / "performance.md"
    _run("benchmarks/speed.py", "--quick", "--T", "2,4", "--threads", "1", "--out", str(out))
    text = out.read_text()
    for heading in (
        "## resnet20: time per batch",
        "## resnet18: peak memory",
        "## Targets (issue 4)",
        "python benchmarks/speed.py --quick",
        "neuron alone",
    ):
        assert heading in text, heading
    assert "## Conversion stages" in text


def test_neuron_micro_benchmark_smoke():
    out = _run("benchmarks/neuron_micro.py", "--shape", "4,3,5,5", "--T", "2", "--threads", "1", "--min-time", "0.001")
    assert "ParallelIF spike forward + backward" in out and "ReLU forward" in out
