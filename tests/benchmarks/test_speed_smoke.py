"""The benchmark scripts of issue 4 in their smoke form (tiny sizes): they must keep running. No timing is asserted."""

import subprocess
import sys
from pathlib import Path

import pytest

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
        "peak RSS rise MiB",
        "where one spike-mode forward spends its time",
    ):
        assert heading in text, heading
    assert "## Conversion stages" in text


def test_spike_profile_writes_its_grid_between_its_markers_only(tmp_path):
    """benchmarks/spike_profile.py (issue 13's profile per T and batch size) rewrites only its own section."""
    page = ROOT / "docs" / "performance.md"
    start, end = "<!-- spike-profile:start -->", "<!-- spike-profile:end -->"
    assert (
        start in page.read_text()
        and end in page.read_text()
        and "python benchmarks/spike_profile.py" in page.read_text()
    )
    out = tmp_path / "performance.md"
    out.write_text(f"head\n{start}\nold\n{end}\ntail\n")
    _run("benchmarks/spike_profile.py", "--quick", "--serial", "--write", "--out", str(out))
    text = out.read_text()
    assert text.startswith("head\n" + start) and text.endswith(end + "\ntail\n") and "old" not in text
    rows = [line for line in text.splitlines() if line.startswith("| 2 | ")]
    assert len(rows) == 3, rows  # batch 2 and 4 in the grid, and the serial row at the largest batch
    for cell in ("Conv2d %", "ParallelIF %", "\n| aten::", "spike ÷ serial"):
        assert cell in text, cell
    grid = [[float(c.split()[0].replace(",", "")) for c in r.strip("|").split("|")] for r in rows[:2]]
    assert all(min(r[5:]) >= 0 and r[5] > 0 and r[7] > 0 for r in grid), grid  # conv and neuron time measured
    assert all(r[-1] < 10 for r in grid), grid  # the named kinds and the adds cover the network


def test_neuron_micro_benchmark_smoke():
    out = _run("benchmarks/neuron_micro.py", "--shape", "4,3,5,5", "--T", "2", "--threads", "1", "--min-time", "0.001")
    assert "ParallelIF spike forward + backward" in out and "ReLU forward" in out


def _speed():
    import importlib.util

    spec = importlib.util.spec_from_file_location("speed", ROOT / "benchmarks" / "speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spikingjelly_column_is_fxsnns_serial_network():
    """The SpikingJelly network of speed.py has the converted network's thresholds, shifts and initial potential:
    it gives fxsnn's serial simulation's output (both integrate the same currents step by step)."""
    import torch

    pytest.importorskip("spikingjelly")
    import fxsnn

    speed = _speed()
    _, ann, x, calib = speed.model_case("resnet20", quick=True)
    snn = fxsnn.passes.lower_to_paraif(speed.da_qcfs(ann, calib, 4), T=4)
    sj = speed.spikingjelly_net(ann, snn, 4)
    with torch.no_grad():
        ref, got = fxsnn.passes.to_serial(snn)(x), sj(x)
        assert torch.allclose(got, ref, atol=1e-4 * float(ref.abs().max())), float((got - ref).abs().max())
        assert torch.equal(sj(x), got)  # the state is reset between calls


def test_spikingjelly_column_is_skipped_without_spikingjelly(monkeypatch):
    import sys

    speed = _speed()
    monkeypatch.setitem(sys.modules, "spikingjelly", None)  # import spikingjelly now raises ImportError
    monkeypatch.setitem(sys.modules, "spikingjelly.activation_based", None)
    _, ann, x, calib = speed.model_case("resnet20", quick=True)
    fns = speed.variants("resnet20", ann, x, calib, 2)
    assert "sj" not in fns and {"ann", "rate", "spike", "serial"} <= set(fns)
