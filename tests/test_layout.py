"""The package keeps the shape docs/architecture.md describes: a small top level, short functions, a small root
namespace, and no module that imports the package root."""

import ast
from pathlib import Path

import fxsnn

PKG = Path(fxsnn.__file__).resolve().parent
SUBPACKAGES = {"graph", "passes", "nn", "calibration", "report", "io", "cli", "models", "testing"}


def _modules():
    return sorted(PKG.rglob("*.py"))


def test_top_level_holds_at_most_eight_modules_and_the_subpackages_by_role():
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert len(top) <= 8, top
    assert {p.name for p in PKG.iterdir() if (p / "__init__.py").exists()} == SUBPACKAGES


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.relative_to(PKG)}:{node.lineno} {node.name}")
    assert not long


def test_the_root_namespace_is_small_and_every_name_resolves():
    assert len(fxsnn.__all__) <= 25
    for name in fxsnn.__all__:
        assert getattr(fxsnn, name) is not None


def test_no_module_inside_the_package_imports_the_package_root():
    offenders = []
    for path in _modules():
        if path.parent == PKG and path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level and not node.module:
                depth = len(path.relative_to(PKG).parts) - 1  # subpackage levels above the module
                if node.level > depth:  # `from .. import x` in fxsnn/sub/mod.py reaches fxsnn/__init__
                    offenders.append(f"{path.relative_to(PKG)}: from {'.' * node.level} import ...")
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "fxsnn":
                offenders.append(f"{path.relative_to(PKG)}: from {node.module} import ...")
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "fxsnn" for a in node.names):
                offenders.append(f"{path.relative_to(PKG)}: import fxsnn...")
    assert not offenders


def test_every_public_function_has_type_hints():
    """Parameters (but self / cls) and the return of every public function and public-class method."""
    missing = []
    for path in _modules():
        for node in ast.parse(path.read_text()).body:
            public_methods = (
                [n for n in node.body if isinstance(n, ast.FunctionDef)]
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_")
                else []
            )
            for f in [node, *public_methods]:
                if not isinstance(f, ast.FunctionDef) or f.name.startswith("_"):
                    continue
                args = [a for a in f.args.args + f.args.kwonlyargs if a.arg not in ("self", "cls")]
                if f.returns is None or any(a.annotation is None for a in args):
                    missing.append(f"{path.relative_to(PKG)}:{f.lineno} {f.name}")
    assert not missing
