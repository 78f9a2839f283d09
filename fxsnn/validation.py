"""Argument checks shared by passes, modules and data steps (Convention 4)."""

from __future__ import annotations

import numbers

MODES = ("spike", "rate")


def check_positive_int(value, name: str, *, where: str) -> int:
    """Return ``value`` as an int if it is an integer >= 1, else raise naming the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an integer >= 1; got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{where}: {name} must be an integer >= 1; got {value}")
    return int(value)


def check_mode(mode, *, where: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{where}: mode must be one of {MODES}; got {mode!r}")
    return mode
