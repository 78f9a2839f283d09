"""fxsnn's error types. Every message names the problem and the fix."""

from __future__ import annotations

__all__ = ["FxsnnError", "TraceError", "ConversionError", "CalibrationError", "ModeError", "DataError"]


class FxsnnError(Exception):
    """Base class of every error fxsnn raises on purpose."""


class TraceError(FxsnnError):
    """A model could not be traced by torch.fx; the original exception is ``__cause__``."""


class ConversionError(FxsnnError, ValueError):
    """A pass was given a graph in a state it cannot convert (wrong stage, no sites, ...)."""


class CalibrationError(FxsnnError, RuntimeError):
    """A data step could not produce its statistics (no data, dead site, ...)."""


class ModeError(FxsnnError, ValueError):
    """An execution mode cannot be honoured by this graph (e.g. MaxPool in rate mode)."""


class DataError(FxsnnError, ValueError):
    """The data given to a data step is not usable (empty, no targets, wrong device or dtype)."""
