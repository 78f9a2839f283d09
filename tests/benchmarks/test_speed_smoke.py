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
