"""Lazy package attributes (PEP 562): a name is imported from its module on first use.

The package root and ``fxsnn.report`` / ``fxsnn.io`` use it so that ``import fxsnn`` (and the ``fxsnn``
command, which checks its arguments first) does not import torch, and so that subpackages can re-export
names without import cycles.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a public name to the relative module
    defining it; any other name is tried as a submodule (``fxsnn.models``), else ``AttributeError``."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        try:
            value = importlib.import_module(module or f".{name}", package)
        except ModuleNotFoundError as exc:
            if module or exc.name != f"{package}.{name}":
                raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        if module:
            value = getattr(value, name)
        importlib.import_module(package).__dict__[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(importlib.import_module(package).__dict__) | set(exports))

    return __getattr__, __dir__
