"""Graph rewrites: pure functions ``(gm, *, options) -> GraphModule`` that never touch their input.

Each is a :func:`fxsnn.passes.base.graph_pass`: ``pass_.contract`` states the site stages it requires and
ensures; it copies its input once, finishes once and prefixes its errors with its name.
"""

from .lower import lower_to_paraif
from .normalize import normalize
from .qcfs import adopt_qcfs, to_da_qcfs, to_qcfs
from .recorders import insert_recorders
from .serial import to_serial

__all__ = ["normalize", "insert_recorders", "to_qcfs", "to_da_qcfs", "adopt_qcfs", "lower_to_paraif", "to_serial"]
