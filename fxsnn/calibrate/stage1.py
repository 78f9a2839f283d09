"""Stage 1, spatial recalibration (Section 4.2, Eq. 10, Algorithm 2): BatchNorm re-fitted under the DA-QCFS forward."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import fx, nn

from ..errors import ConversionError
from ..graph.edit import copy_graph_module, require_graph_module
from ..nn import DAQCFS, QCFS, ParallelIF
from .batches import batches
from .finetune import TrainSpec, check_reiterable, fine_tune

__all__ = ["recalibrate_bn", "reestimate_bn_stats", "BN_MODES"]

BN_MODES = ("eval", "train")

#: θ trained in Stage 1 is kept at or above this fraction of its starting value (θ must stay > 0).
THETA_FLOOR = 1e-2


def _batchnorms(gm: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in gm.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class _MomentProbe:
    """Forward pre-hook summing x and x² per channel (dim 1) in float64 over every other dim."""

    def __init__(self):
        self.n = 0
        self.s1 = self.s2 = None

    def __call__(self, module, args):
        x = args[0].detach()
        rows = x.transpose(0, 1).reshape(x.shape[1], -1).to(torch.float64)
        s1, s2 = rows.sum(dim=1), (rows * rows).sum(dim=1)
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2
        self.n += rows.shape[1]


@torch.no_grad()
def reestimate_bn_stats(
    gm: nn.Module, data: Iterable, *, progress: bool = True, where: str = "fxsnn.reestimate_bn_stats"
) -> nn.Module:
    """Overwrite every BatchNorm's running statistics with Eq. 10, **in place** (returns ``gm``).

    One pass over ``data`` (targets unused) with the BN layers in train mode (they normalise with batch
    statistics, as in Algorithm 2) and everything else in eval mode. For the input ``Φ^l(x)`` of BN ``l``,
    ``[B, C, ...]``, per channel over all samples and positions of the calibration set::

        μ̂^l = mean Φ^l(x),    (σ̂^l)² = mean (Φ^l(x) − μ̂^l)²        (Eq. 10, accumulated in float64)

    — a cumulative average over the whole set, not an exponential one. ``running_var`` stores the unbiased
    ``(σ̂^l)²·n/(n−1)`` as PyTorch does. BN layers without running statistics are left alone.
    """
    bns = [b for b in _batchnorms(gm) if b.track_running_stats]
    if not bns:
        raise ConversionError(f"{where}: the model has no BatchNorm layer with running statistics to re-estimate")
    flags = [m.training for m in gm.modules()]
    probes = [_MomentProbe() for _ in bns]
    handles = [b.register_forward_pre_hook(p) for b, p in zip(bns, probes)]
    gm.eval()
    for b in bns:
        b.train()
    try:
        for x, _ in batches(data, where=where, model=gm, progress=progress):
            gm(x)
    finally:
        for h in handles:
            h.remove()
        for m, f in zip(gm.modules(), flags):
            m.training = f
    for b, p in zip(bns, probes):
        if p.n < 2:
            raise ConversionError(f"{where}: a BatchNorm saw {p.n} value per channel; Eq. 10 needs at least 2")
        mean = p.s1 / p.n
        var = (p.s2 / p.n - mean * mean).clamp(min=0.0)
        b.running_mean.copy_(mean.to(b.running_mean.dtype))
        b.running_var.copy_((var * p.n / (p.n - 1)).to(b.running_var.dtype))
        if b.num_batches_tracked is not None:
            b.num_batches_tracked.zero_()
    return gm


def recalibrate_bn(
    gm: nn.Module,
    data: Iterable,
    *,
    epochs: int = 1,
    steps: int | None = None,
    lr: float = 2e-2,
    lr_min: float = 1e-3,
    warmup: float = 0.1,
    bn_mode: str = "eval",
    train_theta: bool = False,
    train_da: bool = False,
    theta_lr: float | None = None,
    restat_after: bool = False,
    clip_grad: float | None = None,
    holdout=None,
    patience: int | None = None,
    progress: bool = True,
) -> fx.GraphModule:
    """Stage 1 (Algorithm 2): re-fit every BatchNorm of a DA-QCFS network; returns a **new** GraphModule.

    ``gm`` is the DA-QCFS (or QCFS) network before lowering — bit-identical to the rate of the parallel SNN
    with ``T = levels`` — or a plain ANN (then this gives the "adapted ANN" reference). ``gm`` is copied;
    the caller's model is never touched. ``data``: a re-iterable of ``(input, target)`` batches (a list or a
    DataLoader; shuffle it yourself); both steps need targets only for step 2.

    1. **Statistics** (Eq. 10): :func:`reestimate_bn_stats` — cumulative mean/variance of each BN input over
       ``data`` under the DA-QCFS forward.
    2. **Affine fine-tune**: all non-BN parameters frozen; the BN affine terms ``γ, β`` ``[C]`` (and, with
       ``train_theta``, each site's θ ``[C]``, trained relative to its start — see :mod:`fxsnn.finetune` —
       and kept ≥ ``THETA_FLOOR``·θ₀; off here, on in :func:`fxsnn.convert`'s defaults) minimise the
       cross-entropy with AdamW (no weight decay), linear warm-up (``warmup``: fraction or steps) and cosine
       decay ``lr → lr_min`` over ``epochs`` (or exactly ``steps``); the QCFS floor is straight-through.
       ``bn_mode="eval"`` keeps BN on the statistics of step 1 (the network tuned is the network deployed);
       ``"train"`` is Algorithm 2 as written (batch statistics, running statistics updated with the BN's
       momentum while tuning).
       With ``train_da``, each DA-QCFS site's ``ψ_DA`` and ``φ_DA`` ``[C]`` (Eq. 4) are tuned too, in units
       of θ.
    3. With ``restat_after``, step 1 again on the tuned network.

    ``theta_lr`` (default ``lr``) is θ's learning rate; ``clip_grad``, ``holdout`` and ``patience`` as in
    :class:`fxsnn.finetune.TrainSpec`. Modules get back their train/eval flags and parameters their
    ``requires_grad``. The run's :class:`~fxsnn.finetune.TrainReport` is in ``result.meta["fxsnn.stage1"]``.
    Raises :class:`fxsnn.ConversionError` for a lowered network or one without BatchNorm,
    :class:`fxsnn.DataError` for empty or target-less data, :class:`fxsnn.finetune.NonFiniteLossError` when
    the loss becomes NaN/Inf.

    Example::

        >>> da = fxsnn.passes.to_da_qcfs(calibrated, levels=4); da = fxsnn.calibrate_da(da, loader)
        >>> da = fxsnn.recalibrate_bn(da, loader, epochs=1)
    """
    where = "fxsnn.recalibrate_bn"
    if bn_mode not in BN_MODES:
        raise ValueError(f"{where}: bn_mode must be one of {BN_MODES}; got {bn_mode!r}")
    if theta_lr is not None and not (isinstance(theta_lr, (int, float)) and math.isfinite(theta_lr) and theta_lr > 0):
        raise ValueError(f"{where}: theta_lr must be None or a finite number > 0; got {theta_lr!r}")
    spec = TrainSpec(
        epochs=epochs,
        steps=steps,
        lr=lr,
        lr_min=lr_min,
        warmup=warmup,
        clip_grad=clip_grad,
        holdout=holdout,
        patience=patience,
    )
    gm = copy_graph_module(require_graph_module(gm, where=where))
    if any(isinstance(m, ParallelIF) for m in gm.modules()):
        raise ConversionError(
            f"{where}: this network is already lowered to ParallelIF neurons; Stage 1 runs on the DA-QCFS network "
            "before fxsnn.passes.lower_to_paraif (Algorithm 1, line 16). Use fxsnn.tune_delta_b on a lowered network"
        )
    bns = _batchnorms(gm)
    if not bns:
        raise ConversionError(f"{where}: the model has no BatchNorm layer; Stage 1 has nothing to recalibrate")
    check_reiterable(data, where=where)
    grad_flags = [p.requires_grad for p in gm.parameters()]
    flags = [m.training for m in gm.modules()]
    for p in gm.parameters():
        p.requires_grad_(False)
    try:
        reestimate_bn_stats(gm, data, progress=progress, where=where)
        affine = [b for b in bns if b.affine]
        params = [t for b in affine for t in (b.weight, b.bias)]
        scales = [None] * len(params)
        sites = [m for m in gm.modules() if isinstance(m, QCFS)] if train_theta else []
        theta0 = [s.theta.detach().clone() for s in sites]
        params += [s.theta for s in sites]
        scales += theta0
        for p in params:
            p.requires_grad_(True)
        if theta_lr is not None and sites:
            # Same schedule; θ's variables get their own rate through the scale (Adam steps ≈ lr per unit).
            scales[len(scales) - len(sites) :] = [t * (theta_lr / lr) for t in theta0]
        da_sites = [m for m in gm.modules() if isinstance(m, DAQCFS)] if train_da else []
        da_buffers = [t for m in da_sites for t in (m.psi_da, m.phi_da)]
        params += da_buffers
        scales += [m.theta.detach().clone() for m in da_sites for _ in range(2)]
        for t in da_buffers:
            t.requires_grad_(True)
        if params:
            gm.eval()
            if bn_mode == "train":
                for b in bns:
                    b.train()
            buffers = [t for b in bns if bn_mode == "train" for t in (b.running_mean, b.running_var) if t is not None]
            tracked = list(params) + buffers

            def clamp_theta():
                with torch.no_grad():
                    for s, t0 in zip(sites, theta0):
                        s.theta.clamp_(min=t0 * THETA_FLOOR)

            report = fine_tune(
                gm,
                params,
                data,
                spec,
                where=where,
                scales=scales,
                state=lambda: dict(enumerate(tracked)),
                after_step=clamp_theta if sites else None,
                progress=progress,
            )
            gm.meta["fxsnn.stage1"] = report
        if restat_after:
            reestimate_bn_stats(gm, data, progress=progress, where=where)
    finally:
        for m in gm.modules():
            if isinstance(m, DAQCFS):
                m.psi_da.requires_grad_(False)
                m.phi_da.requires_grad_(False)
        for p, f in zip(gm.parameters(), grad_flags):
            p.requires_grad_(f)
        for m, f in zip(gm.modules(), flags):
            m.training = f
    return gm
