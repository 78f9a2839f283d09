"""``insert_recorders``: ReLU sites become in-line activation-range recorders."""

from __future__ import annotations

from torch import fx, nn

from ..nn import ActivationRecorder
from .base import stage_error, swap_sites
from .normalize import normalize

__all__ = ["insert_recorders"]


def insert_recorders(gm: fx.GraphModule, *, percentile: float | None = None, bins: int = 1024) -> fx.GraphModule:
    """Replace every ReLU site with an :class:`fxsnn.nn.ActivationRecorder` (normalising first).

    Recorders compute ``relu(x)`` (outputs unchanged) and, once
    :func:`fxsnn.calibrate` runs data through them, give θ per channel: the
    running max of the pre-activation, or its ``percentile``-th percentile
    (``bins`` histogram bins per channel). Returns a new GraphModule.

    Example::

        >>> gm = fxsnn.passes.insert_recorders(fxsnn.trace(model), percentile=99.9)
        >>> gm = fxsnn.calibrate(gm, loader)
    """
    where = "fxsnn.passes.insert_recorders"
    gm = normalize(gm)

    def swap(site, module, node):
        if type(module) is not nn.ReLU:
            raise stage_error(
                where, site, module, "recorders go in place of ReLUs, on a graph that has not been converted yet"
            )
        return ActivationRecorder(site.channels, percentile=percentile, bins=bins)

    return swap_sites(gm, swap, where=where)
