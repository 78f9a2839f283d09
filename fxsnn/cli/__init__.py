"""The ``fxsnn`` command line: parser, commands, demo (``python -m fxsnn.cli`` or the ``fxsnn`` script)."""

from .commands import main
from .parser import build_parser

__all__ = ["main", "build_parser"]
