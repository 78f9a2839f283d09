"""The README's commands and examples are the ones that work."""

import re
from pathlib import Path

import torch

import fxsnn

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _command(marker: str) -> str:
    block = README.split(f"<!-- {marker} -->", 1)[1]
    return re.search(r"```bash\n(.+?)\n```", block, re.S).group(1).strip()


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1].strip() == _command("test-command")


def test_readme_commands_install_from_the_repo_and_run_the_right_things():
    main, test = _command("main-command"), _command("test-command")
    assert "pip install" in main and "-e" in main and main.endswith("fxsnn demo")
    assert "pip install" in test and test.endswith("python -m pytest")


def test_readme_property_test_example_runs():
    code = README.split("## Property-test your own model", 1)[1]
    code = re.search(r"```python\n(.+?)\n```", code, re.S).group(1)
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)  # noqa: S102 - the README's own example
    torch.manual_seed(0)
    ns["test_my_net_converts_losslessly"]()


def test_readme_short_example_runs_and_converts(capsys):
    section = README.split("## A short example", 1)[1].split("\n## ", 1)[0]
    one_call, pass_by_pass = re.findall(r"```python\n(.+?)\n```", section, re.S)
    ns: dict = {}
    torch.manual_seed(0)
    exec(compile(one_call, "README.md (short example)", "exec"), ns)  # noqa: S102 - the README's own example
    assert "top-1" in capsys.readouterr().out
    assert fxsnn.modes.neurons(ns["snn"]) and fxsnn.modes.get_mode(ns["snn"]) in ("rate", "spike")
    assert not any(isinstance(m, fxsnn.nn.ParallelIF) for m in ns["model"].modules())  # the model is untouched
    exec(compile(pass_by_pass, "README.md (pass by pass)", "exec"), ns)  # noqa: S102
    assert "ParallelIF" in capsys.readouterr().out
    assert fxsnn.modes.get_mode(ns["snn"]) == "spike"
    x = ns["data"][0][0]
    fxsnn.set_mode(ns["snn"], "rate")
    assert torch.equal(ns["snn"](x), ns["q"](x))  # the README's claim: rate mode is bit-identical to DA-QCFS
