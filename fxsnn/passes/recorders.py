"""``insert_recorders``: ReLU sites become in-line activation-range recorders."""

from __future__ import annotations

from torch import fx

from ..nn import ActivationRecorder
from .base import graph_pass, swap_sites_
from .normalize import normalize

__all__ = ["insert_recorders"]


@graph_pass(
    "fxsnn.passes.insert_recorders", requires=("functional", "relu"), ensures=("recorder",), decides=True, analog=True
)
def insert_recorders(gm: fx.GraphModule, *, percentile: float | None = None, bins: int = 1024) -> fx.GraphModule:
    """Replace every ReLU site with an :class:`fxsnn.nn.ActivationRecorder` (normalising first).

    Recorders compute ``relu(x)`` (outputs unchanged) and, once
    :func:`fxsnn.calibrate` runs data through them, give θ per channel: the
    running max of the pre-activation, or its ``percentile``-th percentile
    (``bins`` histogram bins per channel); a clipped ReLU's θ is capped at its clip
    (``nn.ReLU6``: 6; see :class:`fxsnn.nn.ActivationRecorder`). Returns a new GraphModule (one copy
    of the input, normalised and converted in place).

    Every other nonlinear op (GELU, SiLU, Sigmoid, Hardswish, Softmax, LeakyReLU, Tanh, an opaque module, a
    MaxPool of analog values between neurons, ...; :func:`fxsnn.graph.sites.find_hybrid_ops`) would stay
    analog: the pass refuses such a network with :class:`fxsnn.ConversionError` listing them, unless
    ``allow_analog=True``, which keeps them analog and marks them so that ``to_qcfs`` / ``to_da_qcfs`` /
    ``lower_to_paraif`` accept them (the result is a hybrid, and every printout says so).

    Example::

        >>> gm = fxsnn.passes.insert_recorders(fxsnn.trace(model), percentile=99.9)
        >>> gm = fxsnn.calibrate(gm, loader)
    """
    gm = normalize.rewrite_(gm)
    return swap_sites_(
        gm,
        lambda site, module, node: ActivationRecorder(site.channels, percentile=percentile, bins=bins, clip=site.clip),
    )
