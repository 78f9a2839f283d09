"""Boundary modules of a lowered network: expand the input over time, average the output."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import DataError, ModeError
from ..validation import check_mode, check_positive_int
from ._heap import keep_large_buffers

__all__ = ["TimeExpand", "TimeMean"]


class _TimeBoundary(nn.Module):
    def __init__(self, T: int, mode: str = "spike"):
        super().__init__()
        self.T = check_positive_int(T, "T", where=type(self).__name__)
        self.mode = check_mode(mode, where=type(self).__name__)

    def extra_repr(self) -> str:
        return f"T={self.T}, mode={self.mode}"


class TimeExpand(_TimeBoundary):
    """``[B, ...] -> [T·B, ...]`` (time-major repeat, Alg. 3 l. 6) in spike mode; identity in rate mode.

    With ``check=True`` (a network input) it also checks that a floating-point
    input is on the model's device and of its dtype (tracked by an empty
    non-persistent buffer that ``gm.to(...)`` moves with the model), so a
    mismatch fails here with a clear message rather than deep inside a conv.

    Direct encoding (:func:`fxsnn.passes.lower_to_paraif`): everything before
    the first neuron is constant over time and runs once per image, so the
    input's ``TimeExpand`` only checks (``repeat=False``: identity in both
    modes) and the repeat happens where a time-constant tensor meets a
    time-varying op (a first neuron takes the ``[B, ...]`` current itself).

    The first spike-mode forward of a process calls
    :func:`fxsnn.nn._heap.keep_large_buffers` (glibc: large freed buffers stay
    in the heap for the next layer instead of being page-faulted in afresh;
    ``FXSNN_KEEP_BUFFERS=0`` leaves malloc alone).
    """

    def __init__(
        self, T: int, mode: str = "spike", *, dtype: torch.dtype | None = None, repeat: bool = True, check: bool = True
    ):
        super().__init__(T, mode)
        self.repeat, self.check_input = bool(repeat), bool(check)
        self.register_buffer("device_probe", torch.empty(0, dtype=dtype or torch.get_default_dtype()), persistent=False)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.repeat else ", repeat=False (direct encoding: checks only)")

    def check(self, x: Tensor) -> None:
        ref = self.device_probe
        if x.is_floating_point() and (x.device != ref.device or x.dtype != ref.dtype):
            raise DataError(
                f"input is {x.dtype} on {x.device} but the model is {ref.dtype} on {ref.device}; "
                f"move the input with x.to(device={str(ref.device)!r}, dtype={ref.dtype}) or the model with gm.to(...)"
            )

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            return x
        if getattr(self, "check_input", True):
            self.check(x)
        if self.mode == "rate":
            return x
        keep_large_buffers()  # once per process; see fxsnn/nn/_heap.py
        if not getattr(self, "repeat", True):
            return x
        return x.repeat((self.T,) + (1,) * (x.dim() - 1))


class TimeMean(_TimeBoundary):
    """Network output: ``[T·B, ...] -> [B, ...]`` mean over time in spike mode; identity in rate mode."""

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or self.mode == "rate" or x.dim() == 0:
            return x
        if x.shape[0] % self.T:
            raise ModeError(f"TimeMean(T={self.T}): output batch {x.shape[0]} is not a multiple of T")
        return x.reshape((self.T, -1) + tuple(x.shape[1:])).mean(dim=0)
