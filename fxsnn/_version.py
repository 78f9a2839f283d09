"""The fxsnn version (one place; the package root and the file format read it)."""

__version__ = "0.1.0"
