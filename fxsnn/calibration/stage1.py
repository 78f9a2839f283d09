"""Stage 1, spatial recalibration (Section 4.2, Eq. 10, Algorithm 2): BatchNorm re-fitted under the DA-QCFS forward."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..errors import ConversionError, DataError
from ..graph.edit import copy_graph_module, require_graph_module
from ..graph.sites import find_sites
from ..nn import DAQCFS, QCFS, ParallelIF
from ..report.stages import STAGE1, StageReport
from . import distributed
from .batches import Head, batches, run_batch
from .config import BN_MODES, Stage1Config
from .finetune import check_reiterable, check_trainable_dtype, fine_tune
from .objectives import objective_heads
from .state import preserved_state

__all__ = ["recalibrate_bn", "reestimate_bn_stats", "reestimate_bn_stats_", "check_running_stats", "BN_MODES"]

#: θ trained in Stage 1 is kept at or above this fraction of its starting value (θ must stay > 0).
THETA_FLOOR = 1e-2


def _batchnorms(gm: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in gm.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class _MomentProbe:
    """Forward pre-hook summing x and x² per channel (dim 1) in float64 over every other dim, for one batch.

    :meth:`commit` adds the batch's sums to the totals once the whole forward pass succeeded, so a batch that fails
    half-way (or is interrupted) adds nothing.
    """

    def __init__(self, name: str, where: str = "fxsnn.calibration.reestimate_bn_stats"):
        self.name, self.where = name, where
        self.n = 0
        self.s1 = self.s2 = None
        self.batch: tuple | None = None
        self.gathered: tuple | None = None

    def __call__(self, module, args):
        x = args[0].detach()
        if distributed.active():  # the global batch, concatenated as one process holds it
            x, offset = distributed.cat_batches(x, where=self.where)
            self.gathered = (x, offset, args[0].shape[0])
        rows = x.transpose(0, 1).reshape(x.shape[1], -1).to(torch.float64)
        self.batch = (rows.sum(dim=1), (rows * rows).sum(dim=1), rows.shape[1])

    def normalize(self, module, args, output):
        """Forward hook under a process group: this rank's rows of the BN's train-mode output for the *global*
        batch (normalised with the global batch's statistics, as one process fed the concatenated batch is)."""
        x, offset, n = self.gathered
        self.gathered = None
        stats = [None if t is None else t.clone() for t in (module.running_mean, module.running_var)]
        out = F.batch_norm(x, *stats, module.weight, module.bias, True, module.momentum or 0.0, module.eps)
        return out[offset : offset + n]

    def commit(self, *, where: str, index: int) -> None:
        if self.batch is None:
            return
        s1, s2, n = self.batch
        self.batch = None
        if not bool(torch.isfinite(s1).all() and torch.isfinite(s2).all()):
            raise DataError(
                f"{where}: batch {index} has non-finite values at the input of BatchNorm '{self.name}' (NaN/±Inf "
                "activations); check that batch's inputs and the network's weights"
            )
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2
        self.n += n


def _accumulate(gm: nn.Module, bns: list, probes: list, data: Iterable, *, where: str, progress: bool) -> int:
    """One pass over ``data`` with the BN layers in train mode, the probes' sums committed batch by batch; the
    number of batches."""
    n = 0
    handles = [b.register_forward_pre_hook(p) for b, p in zip(bns, probes)]
    if distributed.active():
        handles += [b.register_forward_hook(p.normalize) for b, p in zip(bns, probes)]
    distributed.same_batches(data, where=where)
    try:
        with preserved_state(gm):
            gm.eval()
            for b in bns:
                b.train()
            for i, (x, _) in enumerate(batches(data, where=where, model=gm, progress=progress)):
                run_batch(gm, x, where=where, index=i)
                for p in probes:
                    p.commit(where=where, index=i)
                n = i + 1
    finally:
        for h in handles:
            h.remove()
    return n


def reestimate_bn_stats(gm: nn.Module, data: Iterable, *, progress: bool = True) -> nn.Module:
    """A copy of ``gm`` whose BatchNorm running statistics are Eq. 10's (:func:`reestimate_bn_stats_`).

    ``gm`` is untouched. Example::

        >>> adapted = fxsnn.calibration.reestimate_bn_stats(da, loader)
    """
    return reestimate_bn_stats_(copy.deepcopy(gm), data, progress=progress)


@torch.no_grad()
def reestimate_bn_stats_(
    gm: nn.Module, data: Iterable, *, progress: bool = True, where: str = "fxsnn.calibration.reestimate_bn_stats"
) -> nn.Module:
    """Overwrite every BatchNorm's running statistics with Eq. 10, **in place** (returns ``gm``).

    One pass over ``data`` (targets unused) with the BN layers in train mode (they normalise with batch
    statistics, as in Algorithm 2) and everything else in eval mode. For the input ``Φ^l(x)`` of BN ``l``,
    ``[B, C, ...]``, per channel over all samples and positions of the calibration set::

        μ̂^l = mean Φ^l(x),    (σ̂^l)² = mean (Φ^l(x) − μ̂^l)²        (Eq. 10, accumulated in float64)

    — a cumulative average over the whole set, not an exponential one. ``running_var`` stores the unbiased
    ``(σ̂^l)²·n/(n−1)`` as PyTorch does. BN layers without running statistics are left alone. The statistics are
    written once, after the whole pass: if it fails or is interrupted, every BN keeps the statistics it had.
    Under a ``torch.distributed`` process group ``data`` is this rank's shard: each BN's input is all-gathered
    per batch, every BN normalises the *global* batch with its statistics (as one process fed the concatenated
    batch does) and Eq. 10 sums the global batch in float64, on every rank — bit-identical to one process when
    the network is (:mod:`fxsnn.calibration.distributed`). Raises :class:`fxsnn.DataError` for non-finite inputs or BN inputs (naming the batch and the BN) and for a
    batch that gives a BN one value per channel (a one-sample batch: use ``drop_last=True``).
    """
    _reestimate_(gm, data, progress=progress, where=where)
    return gm


def _reestimate_(gm: nn.Module, data: Iterable, *, progress: bool, where: str) -> int:
    """:func:`reestimate_bn_stats_`'s work, under the fault guard of :mod:`fxsnn.calibration.distributed`; the
    number of batches of its pass."""
    with distributed.guard(where):
        return _reestimate_pass(gm, data, progress=progress, where=where)


@torch.no_grad()
def _reestimate_pass(gm: nn.Module, data: Iterable, *, progress: bool, where: str) -> int:
    named = [(n, b) for n, b in gm.named_modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    named = [(n, b) for n, b in named if b.track_running_stats]
    if not named:
        raise ConversionError(f"{where}: the model has no BatchNorm layer with running statistics to re-estimate")
    bns = [b for _, b in named]
    probes = [_MomentProbe(n, where) for n, _ in named]
    # BN in train mode updates its running statistics on every batch: keep them, and put them back unless the
    # whole pass succeeds (an error or Ctrl-C mid-pass leaves the statistics as they were).
    saved = [{k: t.clone() for k, t in b.named_buffers(recurse=False)} for b in bns]
    try:
        n_batches = _accumulate(gm, bns, probes, data, where=where, progress=progress)
        stats = []
        for p in probes:
            if p.n < 2:
                raise ConversionError(
                    f"{where}: BatchNorm '{p.name}' saw {p.n} value per channel; Eq. 10 needs at least 2"
                )
            mean = p.s1 / p.n
            var = (p.s2 / p.n - mean * mean).clamp(min=0.0)
            stats.append((mean, var * p.n / (p.n - 1)))
    except BaseException:
        for b, old in zip(bns, saved):
            for k, t in b.named_buffers(recurse=False):
                t.copy_(old[k])
        raise
    for b, (mean, var) in zip(bns, stats):  # written once, at the end
        b.running_mean.copy_(mean.to(b.running_mean.dtype))
        b.running_var.copy_(var.to(b.running_var.dtype))
        if b.num_batches_tracked is not None:
            b.num_batches_tracked.zero_()
    return n_batches


class _RelativeTensors:
    """Tensors ``p`` trained *relative to a scale* ``c``: the optimizer holds ``z = p / c`` (fine-tuning module
    docstring), the model keeps ``p`` and is written ``p = c ⊙ z`` after every step.

    Not :mod:`torch.nn.utils.parametrize` (which Stage 2 uses for Δb): when θ is trained it is clamped to
    ``≥ THETA_FLOOR·θ₀`` after each step and ``z`` re-derived as ``p / c``; a parametrization would feed the
    network ``c ⊙ (p / c)`` instead of ``p``, which rounds differently in about one element in eight, and
    fxsnn's converted networks are pinned bit for bit by ``benchmarks/regression.py``.
    """

    def __init__(
        self,
        tensors: list[Tensor],
        scales: list[Tensor],
        *,
        floors: list[Tensor | None],
        ceilings: list[float | None] | None = None,
    ):
        self.tensors, self.scales, self.floors = tensors, scales, floors
        self.ceilings = ceilings or [None] * len(tensors)
        self.clamps = any(f is not None for f in floors) or any(c is not None for c in self.ceilings)
        self.z = [(p.detach() / c).clone().requires_grad_(True) for p, c in zip(tensors, scales)]

    def state(self) -> dict:
        return {("z", i): z for i, z in enumerate(self.z)}

    def after_backward(self) -> None:
        """``∂L/∂z = c ⊙ ∂L/∂p``."""
        for z, p, c in zip(self.z, self.tensors, self.scales):
            z.grad = None if p.grad is None else p.grad * c
            p.grad = None

    @torch.no_grad()
    def after_step(self) -> None:
        """``p ← c ⊙ z``; with floors (ceilings), ``p ← max(p, floor)`` (``min(p, ceiling)``) and ``z ← p / c``."""
        for z, p, c in zip(self.z, self.tensors, self.scales):
            p.copy_(z * c)
        if not self.clamps:
            return
        for p, floor, ceiling in zip(self.tensors, self.floors, self.ceilings):
            if floor is not None:
                p.clamp_(min=floor)
            if ceiling is not None:
                p.clamp_(max=ceiling)
        for z, p, c in zip(self.z, self.tensors, self.scales):
            z.copy_(p / c)


def _weights(gm: nn.Module) -> list[Tensor]:
    """The parameters ``train_weights`` tunes: every floating-point parameter outside the BatchNorm layers and the
    fxsnn activations (the convolution and linear weights and biases of a ResNet), each once."""
    seen, out = set(), []
    for m in gm.modules():
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, QCFS)):
            continue
        for p in m.parameters(recurse=False):
            if p.is_floating_point() and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def _tuned(gm: fx.GraphModule, bns: list, config: Stage1Config) -> tuple[list[Tensor], _RelativeTensors]:
    """Step 2's tensors: the BN affine terms (trained as they are), and θ / ψ_DA, φ_DA / the weights (trained
    relative: θ to its start, ψ_DA, φ_DA to θ, the weights to the scalar ``weight_lr / lr``)."""
    affine = [t for b in bns if b.affine for t in (b.weight, b.bias)]
    named = [(n, m) for n, m in gm.named_modules() if isinstance(m, QCFS)] if config.train_theta else []
    sites = [m for _, m in named]
    clip = {s.name: s.clip for s in find_sites(gm)}  # a clipped ReLU's θ stays at most its clip
    theta0 = [s.theta.detach().clone() for s in sites]
    lr = config.train.lr
    # Same schedule; θ's variables get their own rate through the scale (Adam steps ≈ lr per unit).
    theta_scales = [t * (config.theta_lr / lr) for t in theta0] if config.theta_lr is not None else theta0
    da_sites = [m for m in gm.modules() if isinstance(m, DAQCFS)] if config.train_da else []
    weights = _weights(gm) if config.train_weights else []
    tensors = [s.theta for s in sites] + [t for m in da_sites for t in (m.psi_da, m.phi_da)] + weights
    scales = theta_scales + [m.theta.detach().clone() for m in da_sites for _ in range(2)]
    # A 0-dim scale: the weights' Adam steps are ≈ weight_lr (times the schedule's factor) per unit
    scales += [torch.tensor(config.weight_lr / lr, dtype=w.dtype, device=w.device) for w in weights]
    floors = [t0 * THETA_FLOOR for t0 in theta0] + [None] * (2 * len(da_sites) + len(weights))
    for t in affine + tensors:
        t.requires_grad_(True)
    ceilings = [clip.get(n) for n, _ in named] + [None] * (2 * len(da_sites) + len(weights))
    return affine, _RelativeTensors(tensors, scales, floors=floors, ceilings=ceilings)


def _fine_tune_affine(gm: fx.GraphModule, data: Iterable, config: Stage1Config, *, where: str, progress: bool, heads):
    """Step 2 of :func:`recalibrate_bn`; the run's report, or ``None`` when there is nothing to tune."""
    bns = _batchnorms(gm)
    affine, relative = _tuned(gm, bns, config)
    if not affine and not relative.tensors:
        return None
    gm.eval()
    if config.bn_mode == "train":
        for b in bns:
            b.train()
    buffers = [t for b in bns if config.bn_mode == "train" for t in (b.running_mean, b.running_var) if t is not None]
    tracked = dict(enumerate(affine + relative.tensors + buffers))
    return fine_tune(
        gm,
        affine + relative.z,
        data,
        config.train,
        where=where,
        state=lambda: tracked | relative.state(),
        after_backward=relative.after_backward if relative.tensors else None,
        after_step=relative.after_step if relative.tensors else None,
        progress=progress,
        **heads,
    )


def _check_stage1_input(gm, *, where: str) -> fx.GraphModule:
    gm = copy_graph_module(require_graph_module(gm, where=where))
    if any(isinstance(m, ParallelIF) for m in gm.modules()):
        raise ConversionError(
            f"{where}: this network is already lowered to ParallelIF neurons; Stage 1 runs on the DA-QCFS network "
            "before fxsnn.passes.lower_to_paraif (Algorithm 1, line 16). Use fxsnn.tune_delta_b on a lowered network"
        )
    if not _batchnorms(gm):
        raise ConversionError(f"{where}: the model has no BatchNorm layer; Stage 1 has nothing to recalibrate")
    check_running_stats(gm, where=where)
    check_trainable_dtype(gm, where=where)
    return gm


def check_running_stats(model: nn.Module, *, where: str) -> None:
    """Refuse BatchNorm layers without running statistics (``track_running_stats=False``): they normalise every
    batch with its own statistics, so a converted network's output for one image would depend on the others."""
    bad = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    bad = [n for n in bad if not model.get_submodule(n).track_running_stats]
    if bad:
        raise ConversionError(
            f"{where}: BatchNorm {', '.join(repr(n) for n in bad)} has no running statistics "
            "(track_running_stats=False), so its output — and the converted network's — would depend on the batch. "
            "Give it running statistics (track_running_stats=True, then estimate them, e.g. with "
            "fxsnn.calibration.reestimate_bn_stats) or fold it into the preceding layer"
        )


def recalibrate_bn(
    gm: nn.Module,
    data: Iterable,
    config: Stage1Config | None = None,
    *,
    progress: bool = True,
    loss_fn: Callable | None = None,
    output: Callable | None = None,
    teacher: Callable | None = None,
    **overrides,
) -> fx.GraphModule:
    """Stage 1 (Algorithm 2): re-fit every BatchNorm of a DA-QCFS network; returns a **new** GraphModule.

    ``gm`` is the DA-QCFS (or QCFS) network before lowering — bit-identical to the rate of the parallel SNN
    with ``T = levels`` — or a plain ANN (then this gives the "adapted ANN" reference). ``gm`` is copied;
    the caller's model is never touched. ``data``: a re-iterable of ``(input, target)`` batches (a list or a
    DataLoader; shuffle it yourself); both steps need targets only for step 2. ``config``: a
    :class:`~fxsnn.calibration.config.Stage1Config` (default: fxsnn's recipe, the one :func:`fxsnn.convert`
    uses); ``overrides`` replace its fields by key, as :meth:`Stage1Config.replace` does
    (``recalibrate_bn(da, loader, epochs=1, train_theta=False)``; ``epochs`` is ``train.epochs``).

    1. **Statistics** (Eq. 10): :func:`reestimate_bn_stats_` — cumulative mean/variance of each BN input over
       ``data`` (its first ``stat_batches`` batches when that is set) under the DA-QCFS forward.
    2. **Affine fine-tune**: all non-BN parameters frozen (unless ``train_weights``); the BN affine terms
       ``γ, β`` ``[C]`` (and, with ``train_theta``, each site's θ ``[C]``, trained relative to its start — see
       :mod:`fxsnn.calibration.finetune` — and kept ≥ ``THETA_FLOOR``·θ₀) minimise the cross-entropy with AdamW
       (no weight decay), linear warm-up (``train.warmup``: fraction or steps) and cosine decay
       ``train.lr → train.lr_min`` over ``train.epochs`` (or exactly ``train.steps``); the QCFS floor is
       straight-through. ``bn_mode="eval"`` keeps BN on the statistics of step 1 (the network tuned is the
       network deployed); ``"train"`` is Algorithm 2 as written (batch statistics, running statistics updated
       with the BN's momentum while tuning).
       With ``train_da``, each DA-QCFS site's ``ψ_DA`` and ``φ_DA`` ``[C]`` (Eq. 4) are tuned too, in units
       of θ. With ``train_weights`` (beyond Algorithm 2) every other parameter — the convolution and linear
       weights and biases — is tuned too, its Adam steps ``weight_lr`` (times the schedule's factor
       ``η(s)/train.lr``) in size.
    3. With ``restat_after``, step 1 again on the tuned network.

    ``theta_lr`` (default ``train.lr``) is θ's learning rate; ``train.clip_grad``, ``train.holdout`` and
    ``train.patience`` as in :class:`~fxsnn.calibration.config.TrainSpec`. ``loss_fn(logits, target)`` and
    ``output`` (picks the logits from the model's output) replace the cross-entropy of the logits
    (:func:`fxsnn.calibration.measure.measure`; defaults cover ``{"out": ...}`` dicts, tuples and dense
    ``[B, classes, H, W]`` logits). ``objective="distill"`` (label-free; :mod:`fxsnn.calibration.distill`)
    minimises the KL divergence to ``teacher``'s logits instead (``teacher``: the trained ANN, copied and run
    in eval mode; required then), and ``data`` may be input-only batches; ``distill_weight`` α > 0 mixes the two
    (:func:`fxsnn.calibration.distill.mixed_loss`; ``teacher`` required too). Modules get back their train/eval
    flags and parameters their ``requires_grad``. What the stage did — BN re-estimation batches, epochs, steps,
    training and held-out loss, early stopping, seconds — is in ``result.meta["fxsnn.stage1"]``, a
    :class:`fxsnn.report.StageReport`. Raises :class:`fxsnn.ConversionError` for a lowered network or one
    without BatchNorm, :class:`fxsnn.DataError` for empty or target-less data,
    :class:`~fxsnn.calibration.finetune.NonFiniteLossError` when the loss becomes NaN/Inf.

    Example::

        >>> da = fxsnn.front_end(model, loader, levels=4)
        >>> da = fxsnn.recalibrate_bn(da, loader, epochs=1)
    """
    where = "fxsnn.recalibrate_bn"
    config = (config if config is not None else Stage1Config()).replace(**overrides)
    gm = _check_stage1_input(gm, where=where)
    check_reiterable(data, where=where)
    t0 = time.perf_counter()
    tune_data, heads, hooks, config = objective_heads(
        config, data, teacher=teacher, loss_fn=loss_fn, output=output, where=where, student=gm
    )
    with preserved_state(gm):
        try:
            for p in gm.parameters():
                p.requires_grad_(False)
            stat_data = Head(data, config.stat_batches)
            n_batches = _reestimate_(gm, stat_data, progress=progress, where=where)
            with hooks:
                train = _fine_tune_affine(gm, tune_data, config, where=where, progress=progress, heads=heads)
            if config.restat_after:
                _reestimate_(gm, stat_data, progress=progress, where=where)
        finally:
            _freeze_da_shifts(gm)
    gm.meta["fxsnn.stage1"] = _report(train, config, seconds=time.perf_counter() - t0, batches=n_batches)
    return gm


def _freeze_da_shifts(gm: nn.Module) -> None:
    """Every DA-QCFS site's ψ_DA, φ_DA back to ``requires_grad=False`` (``train_da`` turns them on)."""
    for m in gm.modules():
        if isinstance(m, DAQCFS):
            m.psi_da.requires_grad_(False)
            m.phi_da.requires_grad_(False)


def _report(train, config: Stage1Config, *, seconds: float, batches: int) -> StageReport:
    """Stage 1's :class:`~fxsnn.report.StageReport` (``train``: the fine-tuning run's report, or ``None``)."""
    note = "BN statistics re-estimated again after tuning" if config.restat_after else None
    if train is None:
        untuned = "no BN affine term or θ to tune: only the statistics were re-estimated"
        return StageReport(STAGE1, seconds=seconds, batches=batches, note=untuned)  # restat_after: the same again
    return StageReport.from_training(STAGE1, train, seconds=seconds, batches=batches, note=note)
