"""QCFS (Eq. 2) and distribution-aware DA-QCFS (Eq. 4) activations."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..validation import check_positive_int
from . import functional as Fx
from .functional import _float_vector

__all__ = ["QCFS", "DAQCFS"]


def _stats(t: Tensor) -> str:
    return f"[{float(t.min()):.3g}, {float(t.max()):.3g}]" if t.numel() else "[]"


class QCFS(nn.Module):
    """Quantization-clip-floor-shift activation (Bu et al., 2022; Eq. 2 with ψ = θ/2).

    ``a = θ/L · clip(⌊(x·L + θ/2)/θ⌋, 0, L)`` per channel, for ``x: [B, C, ...]``
    and a learnable ``theta: [C]``. The integer part is
    :func:`fxsnn.nn.functional.spike_count`, the same expression a
    :class:`ParallelIF` with ``T = L`` uses, so the two agree bit for bit.
    Trainable: the floor is straight-through, so a QCFS network can be trained
    from scratch (``theta`` receives gradients).

    Example::

        >>> q = QCFS(torch.tensor([1.0]), levels=4)
        >>> q(torch.tensor([[0.1], [0.4], [2.0]])).flatten().tolist()
        [0.0, 0.5, 1.0]
    """

    kind = "QCFS"

    def __init__(self, theta: Tensor, levels: int):
        super().__init__()
        self.levels = check_positive_int(levels, "levels", where=type(self).__name__)
        theta = _float_vector(theta)
        if not bool((theta > 0).all()):
            raise ValueError(f"{type(self).__name__}: every theta must be > 0; got min {float(theta.min())}")
        self.theta = nn.Parameter(theta)

    @property
    def channels(self) -> int:
        return self.theta.numel()

    def shift_terms(self) -> tuple[Tensor | None, Tensor | None]:
        """``(ψ_DA, φ_DA)``; ``None`` for plain QCFS."""
        return None, None

    def integer_target(self, x: Tensor) -> Tensor:
        """The integer spike target ``k`` of Eq. 3 (a float tensor of integers in ``[0, L]``)."""
        psi_da, _ = self.shift_terms()
        th = self.theta.detach()
        return Fx.spike_count(x, self.levels, th, th * 0.5, psi_da)

    @Fx.along_channel_axis
    def forward(self, x: Tensor) -> Tensor:
        psi_da, phi_da = self.shift_terms()
        return Fx.qcfs(x, self.theta, self.levels, psi_da, phi_da)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, levels={self.levels}, theta={_stats(self.theta.detach())}"


class DAQCFS(QCFS):
    """Distribution-aware QCFS (Hao et al., 2025; Eq. 4).

    ``a = (θ + φ_DA)/L · clip(⌊((x + ψ_DA)·L + θ/2)/θ⌋, 0, L)`` with per-channel
    buffers ``psi_da`` (pre-activation shift) and ``phi_da`` (post-activation
    scale shift), both ``[C]``, zero-initialised (Algorithm 1, stage I) and set by
    :func:`fxsnn.calibrate_da` (stage II).

    While :attr:`reference` is true the module computes the *original*
    activation ``g_OA`` instead — the clipped ReLU ``clip(x, 0, θ)`` for a ReLU
    backbone, or QCFS with ``reference_levels`` for a QCFS-trained one — which is
    what the DA error calibration compares against.
    """

    kind = "DA-QCFS"

    def __init__(self, theta: Tensor, levels: int, *, reference_levels: int | None = None):
        super().__init__(theta, levels)
        if reference_levels is not None:
            reference_levels = check_positive_int(reference_levels, "reference_levels", where="DAQCFS")
        self.reference_levels = reference_levels
        self.reference = False
        self.register_buffer("psi_da", torch.zeros_like(self.theta.detach()))
        self.register_buffer("phi_da", torch.zeros_like(self.theta.detach()))

    def shift_terms(self) -> tuple[Tensor | None, Tensor | None]:
        return self.psi_da, self.phi_da

    def original_activation(self, x: Tensor) -> Tensor:
        """``g_OA``: clip-ReLU at θ, or the source QCFS (Algorithm 1's r_OA)."""
        if self.reference_levels is None:
            return torch.minimum(torch.relu(x), Fx.per_channel(self.theta, x))
        return Fx.qcfs(x, self.theta, self.reference_levels)

    @Fx.along_channel_axis
    def forward(self, x: Tensor) -> Tensor:
        if self.reference:
            return self.original_activation(x)
        return Fx.qcfs(x, self.theta, self.levels, self.psi_da, self.phi_da)  # QCFS.forward, x already moved

    def extra_repr(self) -> str:
        ref = "clip-ReLU" if self.reference_levels is None else f"QCFS(L={self.reference_levels})"
        return super().extra_repr() + f", psi_da={_stats(self.psi_da)}, phi_da={_stats(self.phi_da)}, original={ref}"
