"""Keep large freed buffers in the process heap (glibc), so a spike-mode forward does not page-fault them in.

A spike-mode layer's output is ``[T·B, ...]``: on ResNet-20 at batch 256 that is 64 MiB per activation at
T = 4 and 256 MiB at T = 16. glibc serves every buffer above its mmap threshold (at most 32 MiB) with a
fresh ``mmap`` and returns it to the kernel on ``free``, so each layer of each forward zero-fills its output
page by page on first touch; measured (docs/performance.md), that is most of the gap between spike mode and
T ANN passes. :func:`keep_large_buffers` sets ``M_MMAP_MAX = 0`` and a 2 GiB ``M_TRIM_THRESHOLD`` once per
process, so those buffers come from the heap and are reused by the next layer and the next forward (what
PyTorch's CUDA caching allocator does on a GPU). The cost: the process keeps up to 2 GiB of freed memory
for reuse instead of returning it to the kernel at once. Set ``FXSNN_KEEP_BUFFERS=0`` to leave malloc as it
is; no-op off glibc.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["keep_large_buffers"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h>
_STATE: bool | None = None


def keep_large_buffers() -> bool:
    """Tune glibc's malloc once per process (see the module docstring); whether it is in effect."""
    global _STATE
    if _STATE is None:
        _STATE = False
        if os.environ.get("FXSNN_KEEP_BUFFERS", "1") != "0" and sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
                _STATE = bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)) and bool(libc.mallopt(_M_MMAP_MAX, 0))
            except (OSError, AttributeError):  # not glibc
                _STATE = False
    return _STATE
