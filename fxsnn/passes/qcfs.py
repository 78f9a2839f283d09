"""``to_qcfs`` / ``to_da_qcfs``: calibrated recorders become QCFS or DA-QCFS activations; ``adopt_qcfs``: the
QCFS activations of a user's QCFS-trained model become fxsnn's own."""

from __future__ import annotations

from torch import Tensor, fx, nn

from ..errors import CalibrationError, ConversionError
from ..graph.conventions import qcfs_reading
from ..graph.sites import Site
from ..nn import DAQCFS, QCFS, ActivationRecorder
from ..validation import check_positive_int
from .base import graph_pass, stage_error, swap_sites_

__all__ = ["to_qcfs", "to_da_qcfs", "adopt_qcfs", "site_theta", "as_fxsnn_qcfs"]

_SOURCES = ("recorder", "qcfs", "da-qcfs")
#: ``gm.meta`` key set by :func:`adopt_qcfs` (kept by the later passes and stages, which copy ``meta``)
BACKBONE_KEY = "fxsnn.qcfs_backbone"


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
    reading = qcfs_reading(module)
    if reading is not None:
        return reading.vector(reading.theta, site.channels)
    raise stage_error(site, module, "this pass converts recorders or QCFS activations")


def as_fxsnn_qcfs(site: Site, module: nn.Module) -> QCFS:
    """The fxsnn :class:`~fxsnn.nn.QCFS` / :class:`~fxsnn.nn.DAQCFS` that computes what a site's QCFS module does.

    fxsnn's own modules come back as they are. A QCFS activation of the user's code
    (:func:`fxsnn.graph.conventions.qcfs_reading`: θ, L, shift φ, DA terms) becomes ``QCFS(θ, L)`` when
    ``φ = ½`` and it has no DA terms (Eq. 2, ψ = θ/2), else ``DAQCFS(θ, L, reference_levels=L)`` with
    ``ψ_DA = ψ_DA,user + (φ − ½)·θ/L`` and ``φ_DA = φ_DA,user`` (Eq. 4: ``⌊((x + ψ_DA)·L + θ/2)/θ⌋ =
    ⌊(x + ψ_DA,user)·L/θ + φ⌋``). A θ stored once for the layer is broadcast to the site's ``C`` channels.
    """
    if isinstance(module, QCFS):
        return module
    r = qcfs_reading(module)
    if r is None:
        raise stage_error(site, module, "this pass converts recorders or QCFS activations")
    theta = r.vector(r.theta, site.channels)
    if r.shift == 0.5 and r.psi_da is None and r.phi_da is None:
        return QCFS(theta, r.levels)
    new = DAQCFS(theta, r.levels, reference_levels=r.levels)
    zero = theta.new_zeros(theta.shape)
    psi = r.vector(r.psi_da, theta.numel())
    phi = r.vector(r.phi_da, theta.numel())
    new.psi_da.copy_((zero if psi is None else psi.to(theta)) + (r.shift - 0.5) * theta / r.levels)
    new.phi_da.copy_(zero if phi is None else phi.to(theta))
    new.shift = r.shift  # what the user's module used (to_da_qcfs refuses a shift other than ½)
    return new


@graph_pass("fxsnn.passes.adopt_qcfs", requires=("qcfs", "da-qcfs"), ensures=("qcfs", "da-qcfs"))
def adopt_qcfs(gm: fx.GraphModule) -> fx.GraphModule:
    """Replace the QCFS activations of a user's QCFS-trained model by fxsnn's own (:func:`as_fxsnn_qcfs`).

    θ and L come from the model (no recorder, no data); the result computes the same activations (to float
    rounding at a bin edge, see :mod:`fxsnn.graph.conventions`) and can be lowered as it is, or re-quantised
    with :func:`to_da_qcfs` for the DA error calibration. fxsnn's QCFS / DA-QCFS sites are kept. Returns a new
    GraphModule, with ``meta["fxsnn.qcfs_backbone"] = True`` (what :func:`fxsnn.save` records).

    Example::

        >>> gm = fxsnn.passes.adopt_qcfs(fxsnn.trace(qcfs_trained_model))
        >>> snn = fxsnn.passes.lower_to_paraif(gm, T=4)
    """
    gm.meta[BACKBONE_KEY] = True  # fxsnn.save records the rebuild from the model as adopt_qcfs, not recorders
    return swap_sites_(gm, lambda site, m, node: m if isinstance(m, QCFS) else as_fxsnn_qcfs(site, m))


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
        if not isinstance(module, (ActivationRecorder, QCFS)):
            module = as_fxsnn_qcfs(site, module)
        if getattr(module, "shift", 0.5) != 0.5:
            raise ConversionError(
                f"site '{site.name}' is a QCFS with shift {module.shift:g}; the DA error calibration compares "
                "against QCFS with shift 0.5 (Algorithm 1), so only method 'fspc' (direct lowering) converts it"
            )
        theta = site_theta(site, module)
        if isinstance(module, DAQCFS):
            new = DAQCFS(theta, levels, reference_levels=module.reference_levels)
            new.psi_da.copy_(module.psi_da)
            new.phi_da.copy_(module.phi_da)
            return new
        ref = module.levels if isinstance(module, QCFS) else None
        return DAQCFS(theta, levels, reference_levels=ref)

    return swap_sites_(gm, swap)
