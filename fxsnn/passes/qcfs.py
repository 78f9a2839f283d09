"""``to_qcfs`` / ``to_da_qcfs``: calibrated recorders become QCFS or DA-QCFS activations."""

from __future__ import annotations

from torch import fx, nn

from ..errors import CalibrationError
from ..nn import DAQCFS, QCFS, ActivationRecorder
from ..validation import check_positive_int
from .base import stage_error, swap_sites

__all__ = ["to_qcfs", "to_da_qcfs", "site_theta"]


def site_theta(where: str, site, module: nn.Module):
    """θ per channel from a calibrated recorder or an existing QCFS; a clear error otherwise."""
    if isinstance(module, ActivationRecorder):
        if not module.has_data:
            raise CalibrationError(
                f"{where}: recorder '{site.name}' saw no data; run fxsnn.calibrate(gm, data) before this pass"
            )
        return module.theta(name=f"{where}: recorder '{site.name}'")
    if isinstance(module, QCFS):
        return module.theta.detach()
    if type(module) is nn.ReLU:
        raise stage_error(
            where,
            site,
            module,
            "insert recorders first: fxsnn.passes.insert_recorders(gm), then fxsnn.calibrate(gm, data)",
        )
    raise stage_error(where, site, module, "this pass converts recorders or QCFS activations")


def to_qcfs(gm: fx.GraphModule, *, levels: int) -> fx.GraphModule:
    """Replace calibrated recorders by :class:`fxsnn.nn.QCFS` with ``levels`` quantisation levels (Eq. 2, ψ = θ/2).

    θ per channel comes from each recorder (max or percentile, dead channels
    handled, see :class:`fxsnn.nn.ActivationRecorder`). Existing QCFS sites
    are re-quantised to ``levels``. Returns a new GraphModule.
    """
    where = "fxsnn.passes.to_qcfs"
    levels = check_positive_int(levels, "levels", where=where)
    return swap_sites(gm, lambda site, m, node: QCFS(site_theta(where, site, m), levels), where=where)


def to_da_qcfs(gm: fx.GraphModule, *, levels: int) -> fx.GraphModule:
    """Replace calibrated recorders (or QCFS) by :class:`fxsnn.nn.DAQCFS` (Eq. 4; Algorithm 1, stage I).

    θ is copied from the source (``θ_DA ← θ_OA``), ``ψ_DA = φ_DA = 0``; the
    source activation is remembered as the DA module's *original activation*
    (clip-ReLU at θ for a recorder, QCFS at its own levels for a QCFS site)
    for :func:`fxsnn.calibrate_da` (stage II). Returns a new GraphModule.
    """
    where = "fxsnn.passes.to_da_qcfs"
    levels = check_positive_int(levels, "levels", where=where)

    def swap(site, module, node):
        theta = site_theta(where, site, module)
        if isinstance(module, DAQCFS):
            new = DAQCFS(theta, levels, reference_levels=module.reference_levels)
            new.psi_da.copy_(module.psi_da)
            new.phi_da.copy_(module.phi_da)
            return new
        ref = module.levels if isinstance(module, QCFS) else None
        return DAQCFS(theta, levels, reference_levels=ref)

    return swap_sites(gm, swap, where=where)
