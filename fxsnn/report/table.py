"""Rows of frozen dataclasses that print as a table and convert to dicts and CSV.

The structured results of :func:`fxsnn.summary` and :func:`fxsnn.analyze` are
built from these, so every report prints with tabulate, turns into plain
Python data (``to_dict``) and into CSV (``to_csv``) the same way.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

from ..io.paths import check_writable

__all__ = ["Rows", "format_value"]


def format_value(v: Any) -> Any:
    """How one cell prints: ``None`` → ``-``, floats with 4 significant digits, ranges as ``[lo, hi]``."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}"
    if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, float) for x in v):
        return f"[{v[0]:.3g}, {v[1]:.3g}]"
    return v


def _plain(v: Any) -> Any:
    """A value as JSON-friendly Python data (tuples become lists)."""
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def _is_range(v: Any) -> bool:
    return v is None or (isinstance(v, list) and len(v) == 2 and all(isinstance(x, float) for x in v))


class Rows(tuple):
    """A tuple of dataclass rows with ``__str__`` (a table), ``to_dict`` and ``to_csv``.

    ``headers`` maps field names to column titles; fields not in it are kept
    in ``to_dict`` / ``to_csv`` but not printed.
    """

    headers: dict[str, str] = {}

    def __new__(cls, rows: Sequence = (), headers: dict[str, str] | None = None) -> Rows:
        self = super().__new__(cls, rows)
        if headers is not None:
            self.headers = dict(headers)
        return self

    def table(self, tablefmt: str = "simple") -> str:
        cols = list(self.headers)
        body = [[format_value(getattr(r, c)) for c in cols] for r in self]
        return tabulate(body, headers=[self.headers[c] for c in cols], tablefmt=tablefmt, disable_numparse=True)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} rows)\n{self}"

    def to_dict(self) -> list[dict[str, Any]]:
        """Every row as a dict of plain Python values (all fields, not only the printed ones)."""
        return [{k: _plain(v) for k, v in dataclasses.asdict(r).items()} for r in self]

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """The rows as CSV text (a header line, then one line per row); also written to ``path`` if given.

        A ``(lo, hi)`` range of floats becomes two columns ``name_min`` and
        ``name_max``; any other tuple is joined with spaces.
        """
        rows = Rows.to_dict(self)
        fields = [f.name for f in dataclasses.fields(self[0])] if self else list(self.headers)
        ranges = {f for f in fields if any(r[f] is not None for r in rows) and all(_is_range(r[f]) for r in rows)}
        flat_fields: list[str] = []
        for f in fields:
            flat_fields += [f"{f}_min", f"{f}_max"] if f in ranges else [f]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(flat_fields)
        for r in rows:
            line = []
            for f in fields:
                v = r[f]
                if f in ranges:
                    line += list(v) if isinstance(v, list) else ["", ""]
                elif isinstance(v, list):
                    line.append(" ".join(str(x) for x in v))
                else:
                    line.append("" if v is None else v)
            writer.writerow(line)
        text = buf.getvalue()
        if path is not None:
            check_writable(path)
            with open(path, "w", newline="") as fh:
                fh.write(text)
        return text
