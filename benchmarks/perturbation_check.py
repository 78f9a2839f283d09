"""Perturb the neuron's formula and check that the property tests catch it.

Each perturbation is applied to a temporary copy of the package; the neuron
property tests (tests/nn/test_neuron_properties.py) then run against that copy.
Every perturbation must make at least one test fail.

    python benchmarks/perturbation_check.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]

#: (file, original text, perturbed text, what it breaks)
PERTURBATIONS = [
    (
        "fxsnn/nn/functional.py",
        'y = _iop(y, per_channel(psi, x), "add")',
        'y = _iop(y, per_channel(psi, x) * 1.001, "add")',
        "ψ = θ/2 shifted by 0.1 %",
    ),
    (
        "fxsnn/nn/functional.py",
        "return torch.le(lad, k.unsqueeze(0), out=out)",
        "return torch.lt(lad, k.unsqueeze(0), out=out)",
        "spike slots off by one (Eq. 8)",
    ),
    (
        "fxsnn/nn/functional.py",
        "late = lad <= k.unsqueeze(0)",
        "late = lad < k.unsqueeze(0)",
        "spike slots off by one when θ − Δb ≤ 0",
    ),
    (
        "fxsnn/nn/functional.py",
        "return torch.arange(T, 0, -1, device=device, dtype=dtype)",
        "return torch.arange(T - 1, -1, -1, device=device, dtype=dtype)",
        "ladder n_t = T − t instead of T − t + 1",
    ),
    (
        "fxsnn/nn/functional.py",
        "theta_eff = theta_pre - delta_b",
        "theta_eff = theta_pre + delta_b",
        "sign of Δb flipped (Eq. 17)",
    ),
    (
        "fxsnn/nn/functional.py",
        "k_neg = (T + 1 - torch.ceil(q)).clamp_(0, T)",
        "k_neg = (T - torch.ceil(q)).clamp_(0, T)",
        "θ − Δb < 0 branch off by one",
    ),
    ("fxsnn/nn/serial.py", 'self.v = Fx._iop(v, s * th, "sub")', "self.v = v * (1 - s)", "serial IF resets to zero"),
]


def run_one(file: str, old: str, new: str) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copytree(ROOT / "fxsnn", tmp / "fxsnn")
        shutil.copytree(ROOT / "tests", tmp / "tests")
        target = tmp / file
        text = target.read_text()
        if old not in text:
            return False, f"perturbation site not found in {file}"
        target.write_text(text.replace(old, new, 1))
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/nn/test_neuron_properties.py"],
            cwd=tmp,
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(tmp), "PATH": "/usr/bin:/bin"},
        )
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-200:]
        return proc.returncode != 0, last


def main() -> int:
    rows, ok = [], True
    for file, old, new, what in PERTURBATIONS:
        caught, summary = run_one(file, old, new)
        ok &= caught
        rows.append((what, "caught" if caught else "MISSED", summary))
    print(tabulate(rows, headers=("perturbation", "result", "pytest summary"), tablefmt="github"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
