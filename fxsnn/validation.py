"""Argument checks shared by passes, modules, data steps and configs (Convention 4), and the configs' base class.

Every config (:class:`fxsnn.ConvertConfig`, :class:`~fxsnn.calibration.config.Stage1Config`,
:class:`~fxsnn.calibration.config.Stage2Config`, :class:`~fxsnn.calibration.config.TrainSpec`) is a frozen dataclass
that validates itself in ``__post_init__`` with the few checks below; a bad value raises :class:`ConfigError`
naming the field and the accepted range. :class:`Config` gives them one way to override nested fields:
``cfg.replace(**{"stage1.train.lr": 0.01})`` or ``cfg.override("stage1.train.lr=0.01")`` (the CLI's ``--set``).
"""

from __future__ import annotations

import ast
import dataclasses
import math
import numbers
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Self

MODES = ("spike", "rate")


def check_positive_int(value: object, name: str, *, where: str) -> int:
    """Return ``value`` as an int if it is an integer >= 1, else raise naming the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an integer >= 1; got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{where}: {name} must be an integer >= 1; got {value}")
    return int(value)


def check_mode(mode: object, *, where: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{where}: mode must be one of {MODES}; got {mode!r}")
    return mode


# -- config checks -------------------------------------------------------------------------------------------


class ConfigError(ValueError):
    """A config field out of its accepted range: ``"{owner}: {field} {requirement}; got {value!r}"``."""

    def __init__(self, owner: str, field: str, requirement: str, value):
        super().__init__(f"{owner}: {field} {requirement}; got {value!r}")
        self.owner, self.field, self.requirement, self.value = owner, field, requirement, value

    def within(self, owner: str, prefix: str) -> ConfigError:
        """The same error seen from a config ``owner`` that holds this one's config as field ``prefix``."""
        return ConfigError(owner, f"{prefix}.{self.field}", self.requirement, self.value)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def positive_int(cfg: object, name: str, *, optional: bool = False) -> None:
    """``cfg.<name>`` is an integer >= 1 (or ``None`` when ``optional``)."""
    v = getattr(cfg, name)
    if optional and v is None:
        return
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ConfigError(type(cfg).__name__, name, f"must be {'None or ' if optional else ''}an integer >= 1", v)


def positive_float(
    cfg: object, name: str, *, zero: bool = False, optional: bool = False, at_most: float | None = None
) -> None:
    """``cfg.<name>`` is a finite number > 0 (``>= 0`` with ``zero``; ``<= at_most`` when given; or ``None``)."""
    v = getattr(cfg, name)
    if optional and v is None:
        return
    ok = _is_real(v) and (v >= 0 if zero else v > 0) and (at_most is None or v <= at_most)
    if not ok:
        rng = f"in [0, {at_most}]" if zero and at_most is not None else (">= 0" if zero else "> 0")
        raise ConfigError(type(cfg).__name__, name, f"must be {'None or ' if optional else ''}a finite number {rng}", v)


def fraction_or_count(cfg: object, name: str, *, zero: bool = False, what: str = "a whole number") -> None:
    """``cfg.<name>`` is a fraction in (0, 1) (``[0, 1)`` with ``zero``) or a whole number >= 1."""
    v = getattr(cfg, name)
    frac = _is_real(v) and (0 <= v < 1 if zero else 0 < v < 1)
    if not (frac or (_is_real(v) and v >= 1 and float(v).is_integer())):
        raise ConfigError(type(cfg).__name__, name, f"must be a fraction in {'[0' if zero else '(0'}, 1) or {what}", v)


def one_of(cfg: object, name: str, allowed: tuple) -> None:
    """``cfg.<name>`` is one of ``allowed`` (compared by equality; bools only where listed)."""
    v = getattr(cfg, name)
    if isinstance(v, bool) != any(isinstance(a, bool) for a in allowed) or v not in allowed:
        raise ConfigError(type(cfg).__name__, name, f"must be one of {allowed}", v)


def a_bool(cfg: object, name: str) -> None:
    """``cfg.<name>`` is ``True`` or ``False``."""
    v = getattr(cfg, name)
    if not isinstance(v, bool):
        raise ConfigError(type(cfg).__name__, name, "must be True or False", v)


def instance_of(cfg: object, name: str, kind: type) -> None:
    """``cfg.<name>`` is a ``kind`` (a nested config)."""
    v = getattr(cfg, name)
    if not isinstance(v, kind):
        raise ConfigError(type(cfg).__name__, name, f"must be a {kind.__name__}", v)


# -- the configs' base class ---------------------------------------------------------------------------------


class UnknownOptionError(TypeError):
    """A key that names no field: the message lists the valid keys."""

    def __init__(self, owner: str, key: str, valid: list[str], hint: str = ""):
        super().__init__(f"{owner}: unknown option {key!r}; valid options: {', '.join(valid)}{hint}")
        self.owner, self.key, self.valid, self.hint = owner, key, valid, hint


def parse_value(text: str) -> object:
    """``"1"`` → 1, ``"None"`` → None, ``"'x'"`` and bare ``"x"`` → ``"x"`` (:func:`ast.literal_eval`, else the text)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


class Config:
    """Base of fxsnn's frozen dataclass configs: dotted keys for nested fields, one way to override them.

    A key names a field (``"output_mode"``) or, through nested configs, a field of a field
    (``"stage1.train.lr"``). In a config with a ``train`` field (Stage 1 and Stage 2) the fields of its
    :class:`~fxsnn.calibration.config.TrainSpec` may skip ``train.``: ``"stage1.epochs"`` is
    ``"stage1.train.epochs"``.
    """

    #: the nested config whose fields may be named without its prefix (see the class docstring)
    _shorthand: str | None = None

    def keys(self) -> list[str]:
        """Every leaf key of this config, dotted through nested configs, in declaration order."""
        out = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out += [f"{f.name}.{k}" for k in v.keys()] if isinstance(v, Config) else [f.name]
        return out

    def _resolve(self, key: str) -> tuple[str, str]:
        """``key`` → ``(field, rest)``: ``rest`` is the key inside a nested config, ``""`` for a field of this one."""
        head, _, rest = key.partition(".")
        names = [f.name for f in dataclasses.fields(self)]
        if head in names and (not rest or isinstance(getattr(self, head), Config)):
            return head, rest
        short = self._shorthand
        if short is not None and head in [f.name for f in dataclasses.fields(getattr(self, short))]:
            return short, key
        raise UnknownOptionError(type(self).__name__, key, self.keys(), self._hint())

    def _hint(self) -> str:
        nested = [getattr(self, f.name) for f in dataclasses.fields(self)]
        if self._shorthand or any(isinstance(v, Config) and v._shorthand for v in nested):
            return " (a stage's train.* options may skip 'train.', e.g. stage1.epochs)"
        return ""

    def replace(self, **changes: object) -> Self:
        """A validated copy with ``changes`` (keys as in the class docstring: ``cfg.replace(**{"stage1.epochs": 1})``).

        An unknown key raises a TypeError listing the valid ones; a bad value a :class:`ConfigError` naming the
        field by its full key and the accepted range.
        """
        direct, nested = {}, {}
        for key, value in changes.items():
            head, rest = self._resolve(key)
            if rest:
                nested.setdefault(head, {})[rest] = value
            else:
                direct[head] = value
        for head, sub in nested.items():
            base = direct.get(head, getattr(self, head))
            if not isinstance(base, Config):
                raise ConfigError(type(self).__name__, head, "must be a config", base)
            try:
                direct[head] = base.replace(**sub)
            except ConfigError as exc:
                raise exc.within(type(self).__name__, head) from None
            except UnknownOptionError as exc:
                raise UnknownOptionError(type(self).__name__, f"{head}.{exc.key}", self.keys(), self._hint()) from None
        return dataclasses.replace(self, **direct)

    def override(self, *assignments: str) -> Self:
        """A validated copy with ``"key=value"`` assignments, values parsed by :func:`parse_value`.

        Example::

            >>> ConvertConfig.recipe("paper").override("stage1.epochs=1", "stage2.train.lr=0.01")
        """
        changes = {}
        for item in assignments:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(
                    f"{type(self).__name__}: {item!r} is not of the form KEY=VALUE (e.g. stage1.epochs=1); "
                    f"valid keys: {', '.join(self.keys())}"
                )
            changes[key.strip()] = parse_value(value.strip())
        return self.replace(**changes)
