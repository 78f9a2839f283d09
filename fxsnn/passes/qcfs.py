"""``to_qcfs`` / ``to_da_qcfs``: calibrated recorders become QCFS or DA-QCFS activations."""

from __future__ import annotations

from torch import Tensor, fx, nn

from ..errors import CalibrationError
from ..graph.sites import Site
from ..nn import DAQCFS, QCFS, ActivationRecorder
from ..validation import check_positive_int
from .base import graph_pass, stage_error, swap_sites_

__all__ = ["to_qcfs", "to_da_qcfs", "site_theta"]

_SOURCES = ("recorder", "qcfs", "da-qcfs")


def site_theta(site: Site, module: nn.Module) -> Tensor:
    """θ per channel ``[C]`` from a calibrated recorder or an existing QCFS; a clear error otherwise."""
    if isinstance(module, ActivationRecorder):
        if not module.has_data:
            raise CalibrationError(
                f"recorder '{site.name}' saw no data; run fxsnn.calibrate(gm, data) before this pass"
            )
        return module.theta(name=f"recorder '{site.name}'")
    if isinstance(module, QCFS):
        return module.theta.detach()
    raise stage_error(site, module, "this pass converts recorders or QCFS activations")


@graph_pass("fxsnn.passes.to_qcfs", requires=_SOURCES, ensures=("qcfs",), analog=True)
def to_qcfs(gm: fx.GraphModule, *, levels: int) -> fx.GraphModule:
    """Replace calibrated recorders by :class:`fxsnn.nn.QCFS` with ``levels`` quantisation levels (Eq. 2, ψ = θ/2).

    θ per channel comes from each recorder (max or percentile, dead channels
    handled, see :class:`fxsnn.nn.ActivationRecorder`). Existing QCFS sites
    are re-quantised to ``levels``. Returns a new GraphModule.
    """
    levels = check_positive_int(levels, "levels", where=to_qcfs.contract.name)
    return swap_sites_(gm, lambda site, m, node: QCFS(site_theta(site, m), levels))


@graph_pass("fxsnn.passes.to_da_qcfs", requires=_SOURCES, ensures=("da-qcfs",), analog=True)
def to_da_qcfs(gm: fx.GraphModule, *, levels: int) -> fx.GraphModule:
    """Replace calibrated recorders (or QCFS) by :class:`fxsnn.nn.DAQCFS` (Eq. 4; Algorithm 1, stage I).

    θ is copied from the source (``θ_DA ← θ_OA``), ``ψ_DA = φ_DA = 0``; the
    source activation is remembered as the DA module's *original activation*
    (clip-ReLU at θ for a recorder, QCFS at its own levels for a QCFS site)
    for :func:`fxsnn.calibrate_da` (stage II). Returns a new GraphModule.
    """
    levels = check_positive_int(levels, "levels", where=to_da_qcfs.contract.name)

    def swap(site: Site, module: nn.Module, node: fx.Node) -> DAQCFS:
        theta = site_theta(site, module)
        if isinstance(module, DAQCFS):
            new = DAQCFS(theta, levels, reference_levels=module.reference_levels)
            new.psi_da.copy_(module.psi_da)
            new.phi_da.copy_(module.phi_da)
            return new
        ref = module.levels if isinstance(module, QCFS) else None
        return DAQCFS(theta, levels, reference_levels=ref)

    return swap_sites_(gm, swap)
