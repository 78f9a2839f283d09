"""Filesystem checks made before anything is written."""

from __future__ import annotations

import os

__all__ = ["check_parent_dir"]


def check_parent_dir(path: str | os.PathLike) -> None:
    """Raise ``FileNotFoundError`` with the fix when the directory ``path`` would be written into does not exist."""
    parent = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(parent):
        raise FileNotFoundError(
            f"cannot write {os.fspath(path)!r}: its directory {parent!r} does not exist; "
            f"create it first (mkdir -p {parent}) or choose another path"
        )
