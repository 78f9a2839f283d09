"""Modules that fxsnn inserts into a graph, and their shared arithmetic (:mod:`fxsnn.nn.functional`)."""

from .paraif import ParallelIF
from .qcfs import DAQCFS, QCFS
from .recorder import ActivationRecorder
from .serial import SerialIF, SerialSimulator
from .time import TimeExpand, TimeMean

__all__ = [
    "ActivationRecorder",
    "QCFS",
    "DAQCFS",
    "ParallelIF",
    "SerialIF",
    "SerialSimulator",
    "TimeExpand",
    "TimeMean",
]

#: Every activation-site module kind fxsnn inserts, in pipeline order.
SITE_MODULES = (ActivationRecorder, QCFS, ParallelIF)
