"""The docs run: docs/tutorial.md's python blocks are executed in order and their printouts compared with the page.

Numbers are masked in the comparison (the last digits of a trained network depend on the machine); names,
table columns, kinds and messages must match. Regenerate the printouts after a deliberate change with::

    python tests/test_docs.py --update

docs/api.md must mention every public name of ``fxsnn.__all__``, and every ``fxsnn.<name>`` it mentions must exist.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
TUTORIAL = DOCS / "tutorial.md"
API = DOCS / "api.md"

_BLOCK = re.compile(r"```python\n(?P<code>.*?)```\n(?:\n```text\n(?P<out>.*?)```\n)?", re.S)
_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:e[-+]?\d+)?", re.I)


def mask(text: str) -> str:
    """Numbers → ``#``, then runs of spaces / table rules collapsed, so column widths do not matter."""
    text = _NUMBER.sub("#", text)
    text = re.sub(r"#(?:[ ]*#)+", "#", text)  # "1 234" or "[#, #]" spacing quirks
    text = re.sub(r"-{2,}", "--", text)
    return "\n".join(" ".join(line.split()) for line in text.strip().splitlines() if line.strip())


def run_blocks(markdown: str, workdir: str):
    """Execute every ```python block in one namespace inside ``workdir``; yield (match, stdout)."""
    ns: dict = {"__name__": "__tutorial__"}
    old = os.getcwd()
    os.chdir(workdir)
    try:
        for i, m in enumerate(_BLOCK.finditer(markdown)):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    exec(compile(m.group("code"), f"{TUTORIAL.name}[block {i}]", "exec"), ns)
                except Exception as exc:
                    raise AssertionError(
                        f"tutorial block {i} failed:\n{m.group('code')}\n{type(exc).__name__}: {exc}"
                    ) from exc
            yield m, out.getvalue()
    finally:
        os.chdir(old)


def test_tutorial_runs_and_prints_what_it_shows(tmp_path):
    text = TUTORIAL.read_text()
    blocks = 0
    for m, out in run_blocks(text, str(tmp_path)):
        blocks += 1
        shown = m.group("out")
        if out.strip():
            assert shown is not None, f"block prints but the page shows no output:\n{m.group('code')}\n---\n{out}"
            assert mask(out) == mask(shown), (
                f"printout changed for block:\n{m.group('code')}\n--- now:\n{out}\n--- page:\n{shown}"
            )
        else:
            assert shown is None, f"the page shows output for a silent block:\n{m.group('code')}"
    assert blocks >= 12
    assert (tmp_path / "distributions.png").stat().st_size > 10_000
    assert (tmp_path / "digits_T4.fxsnn").exists()


def test_mask_hides_numbers_only():
    assert mask("top-1 97.33 %  loss 0.1 (397 samples)") == mask("top-1 9.3 %  loss 12.0 (3 samples)")
    assert mask("site relu  [1.2, 3e-05]") == mask("site relu   [0.5, 4]")
    assert mask("site relu") != mask("site relu_1")
    assert mask("ParallelIF x") != mask("DA-QCFS x")


def _api_names() -> set[str]:
    return set(re.findall(r"\bfxsnn\.([A-Za-z_][A-Za-z0-9_]*)", API.read_text()))


def test_api_reference_covers_every_public_name():
    import fxsnn

    missing = sorted(set(fxsnn.__all__) - _api_names())
    assert not missing, f"docs/api.md does not document: {', '.join(missing)}"


def test_api_reference_names_exist():
    import importlib

    import fxsnn

    text = API.read_text()
    for dotted in sorted(set(re.findall(r"`(fxsnn(?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text))):
        obj, parts = fxsnn, dotted.split(".")[1:]
        for i, part in enumerate(parts):
            if not hasattr(obj, part):
                try:  # a submodule not imported by the package
                    obj = importlib.import_module(".".join(["fxsnn"] + parts[: i + 1]))
                    continue
                except ImportError:
                    pytest.fail(f"docs/api.md mentions {dotted}, which does not exist")
            obj = getattr(obj, part)


def _split_params(text: str) -> list[str]:
    """Parameter names of a written signature ``a, b=(1, 2), *, c=None, **kw`` → ``['a', 'b', 'c', 'kw']``."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    names = []
    for p in (p.strip() for p in parts):
        if p in ("", "*", "/"):
            continue
        names.append(re.split(r"[=:]", p.lstrip("*"))[0].strip())
    return names


def test_api_signatures_match_the_code():
    import importlib
    import inspect

    import fxsnn

    checked = 0
    for dotted, params in re.findall(r"`(fxsnn(?:\.[A-Za-z_][A-Za-z0-9_]*)+)\(([^`]*)\)`", API.read_text()):
        obj = fxsnn
        for i, part in enumerate(dotted.split(".")[1:]):
            obj = getattr(obj, part, None) or importlib.import_module(".".join(dotted.split(".")[: i + 2]))
        real = [p.name for p in inspect.signature(obj).parameters.values()]
        assert _split_params(params) == real, f"docs/api.md writes {dotted}({params}); the code has {real}"
        checked += 1
    assert checked >= 30


def update() -> None:
    """Rewrite the ```text blocks of the tutorial with what its python blocks print now."""
    text = TUTORIAL.read_text()
    pieces, last = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for m, out in run_blocks(text, tmp):
            pieces.append(text[last : m.start()])
            pieces.append(f"```python\n{m.group('code')}```\n")
            if out.strip():
                pieces.append(f"\n```text\n{out.rstrip()}\n```\n")
            last = m.end()
            if m.group("code").strip().startswith("print(fxsnn.report.plot_distributions"):
                import shutil

                (DOCS / "img").mkdir(exist_ok=True)
                shutil.copy(os.path.join(tmp, "distributions.png"), DOCS / "img" / "distributions.png")
    pieces.append(text[last:])
    TUTORIAL.write_text("".join(pieces))
    print(f"updated {TUTORIAL}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_docs.py --update")
    update()
