"""Filesystem checks made before anything is written (by fxsnn.save, the report writers and the command line)."""

from __future__ import annotations

import os
import tempfile

__all__ = ["check_writable"]


def check_writable(path: str | os.PathLike) -> str:
    """Raise, with the fix, unless a file can be written at ``path``; returns ``path`` as a string.

    Checked before any work, so a bad output path is found in a second, not after a conversion:

    - the directory does not exist: ``FileNotFoundError`` (``mkdir -p DIR``);
    - ``path`` is a directory: ``IsADirectoryError``;
    - the directory cannot be written (permissions, a read-only or full file system): the ``OSError``
      subclass the probe raised (e.g. ``PermissionError``). The probe is an exclusively created temporary file
      in that directory, removed at once.

    Every message starts with ``path``, so a caller can prefix the option that named it
    (``f"--out {exc}"``).
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(
            f"{path}: directory {parent} does not exist; create it first (mkdir -p {parent}) or choose another path"
        )
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory; give a file name, e.g. {os.path.join(path, 'out')}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".fxsnn-probe-", dir=parent)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise type(exc)(f"{path}: cannot write in {parent} ({exc.strerror or exc}); choose another path") from None
    return path
