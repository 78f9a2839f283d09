"""Data steps of the data-free passes: record activation ranges; DA error calibration (Algorithm 1, stage II)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator

import torch
from torch import fx

from ..errors import ConversionError, DataError
from ..graph.edit import copy_graph_module, require_graph_module
from ..nn import DAQCFS, ActivationRecorder
from ..nn.recorder import NonFiniteActivation
from . import distributed
from .batches import batches, check_finite, run_batch
from .state import preserved_state

__all__ = ["calibrate", "calibrate_", "calibrate_da", "calibrate_da_", "recording"]


def _channel_mean(t: torch.Tensor, axis: int = 1) -> torch.Tensor:
    """μ(·) of Algorithm 1: the mean over every dim but the channel dim (``axis``: 1, or -1 after a Linear)."""
    if t.dim() > 2 and axis % t.dim() != 1:
        t = t.movedim(axis, 1)
    return t.transpose(0, 1).reshape(t.shape[1], -1).mean(dim=1)


@contextlib.contextmanager
def recording(gm: torch.nn.Module) -> Iterator[list[ActivationRecorder]]:
    """Context manager: recorders of ``gm`` record while inside, and stop after."""
    recs = [m for m in gm.modules() if isinstance(m, ActivationRecorder)]
    old = [r.recording for r in recs]
    for r in recs:
        r.recording = True
    try:
        yield recs
    finally:
        for r, o in zip(recs, old):
            r.recording = o


def calibrate(gm: fx.GraphModule, data: Iterable, *, progress: bool = True) -> fx.GraphModule:
    """Run ``data`` through a copy of ``gm`` so its recorders learn θ per channel; returns the copy.

    ``data``: any iterable of batches — input tensors or ``(input, target, ...)``
    tuples (targets unused). Runs in eval mode under ``torch.no_grad()``;
    calibrating the result again accumulates. ``gm`` is untouched (:func:`calibrate_` works in place).
    Under a ``torch.distributed`` process group ``data`` is this rank's shard and θ is bit-identical to one
    process fed the concatenated batches (:mod:`fxsnn.calibration.distributed`).
    Raises :class:`fxsnn.DataError` on empty data and :class:`fxsnn.ConversionError` when ``gm`` has no
    recorder.

    Example::

        >>> gm = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(model)), loader)
    """
    return calibrate_(copy_graph_module(require_graph_module(gm, where="fxsnn.calibrate")), data, progress=progress)


def calibrate_(gm: fx.GraphModule, data: Iterable, *, progress: bool = True) -> fx.GraphModule:
    """:func:`calibrate` in place: ``gm``'s recorders learn θ; returns ``gm``."""
    gm = require_graph_module(gm, where="fxsnn.calibrate")
    if not any(isinstance(m, ActivationRecorder) for m in gm.modules()):
        raise ConversionError("fxsnn.calibrate: the model has no recorder; run fxsnn.passes.insert_recorders(gm) first")
    where = "fxsnn.calibrate"
    names = {m: n for n, m in gm.named_modules() if isinstance(m, ActivationRecorder)}
    with (
        distributed.guard(where),
        preserved_state(gm),
        recording(gm) as recs,
        torch.no_grad(),
        _global(recs, data, where),
    ):
        gm.eval()
        for i, (x, _) in enumerate(batches(data, where=where, model=gm, progress=progress)):
            try:
                run_batch(gm, x, where=where, index=i)
            except NonFiniteActivation as exc:
                site = f"the input of site '{names.get(exc.module, '?')}'"
                raise DataError(
                    f"{where}: batch {i} has non-finite values at {site} (NaN/±Inf pre-activations); the recorder "
                    "kept its statistics from before that batch. Check that batch's inputs and the network's weights"
                ) from None
    return gm


@contextlib.contextmanager
def _global(recs: list[ActivationRecorder], data: Iterable, where: str) -> Iterator[None]:
    """Under a process group: check the ranks' batch counts agree, all-reduce each batch's max (MAX) inside the
    recorders, and sum the histogram counts the pass added (exact integers) at the end. Nothing otherwise."""
    if not distributed.active():
        yield
        return
    distributed.same_batches(data, where=where)
    reduce_max = functools.partial(distributed.all_max_, where=where)
    before = [r.hist.clone() for r in recs if r.percentile is not None]
    for r in recs:
        r.batch_max_hook = reduce_max
    try:
        yield
    finally:
        for r in recs:
            del r.batch_max_hook
    hists = [r.hist for r in recs if r.percentile is not None]
    if [h.shape for h in hists] != [b.shape for b in before]:  # first calibration: the recorders sized themselves
        before = [torch.zeros_like(h) for h in hists]
    distributed.sum_histograms_(hists, before, where=where)


class _MeanProbe:
    """Forward hook that keeps μ(input) and μ(output) of one DA-QCFS module for the current pass."""

    def __init__(self, name: str = "?"):
        self.name = name
        self.pre = self.post = None

    def __call__(self, module, args, output):
        axis = getattr(module, "channel_axis", 1)
        pre, post = args[0].detach(), output.detach()
        if distributed.active():  # the global batch, concatenated as one process holds it
            pre, post = (distributed.cat_batches(t, where="fxsnn.calibrate_da")[0] for t in (pre, post))
        self.pre = _channel_mean(pre, axis)
        self.post = _channel_mean(post, axis)

    def check(self, *, where: str, index: int) -> None:
        site = f"site '{self.name}'"
        check_finite(self.pre, where=where, index=index, site=f"the input of {site} (channel means)")
        check_finite(self.post, where=where, index=index, site=f"the output of {site} (channel means)")


def _probe_pass(gm, x, sites, probes, *, reference: bool, where: str, index: int) -> list:
    """One forward pass with every DA-QCFS site in reference (``g_OA``) or DA mode; the probes' ``(pre, post)``."""
    for m in sites:
        m.reference = reference
    run_batch(gm, x, where=where, index=index)
    for p in probes:
        p.check(where=where, index=index)
    return [(p.pre, p.post) for p in probes]


def calibrate_da(
    gm: fx.GraphModule, data: Iterable, *, momentum: float = 0.99, progress: bool = True
) -> fx.GraphModule:
    """Layer-wise DA error calibration (Algorithm 1, stage II) of a copy of ``gm``; returns the copy.

    ``gm`` is untouched; :func:`calibrate_da_` works in place. The update is that of :func:`calibrate_da_`.
    """
    gm = copy_graph_module(require_graph_module(gm, where="fxsnn.calibrate_da"))
    return calibrate_da_(gm, data, momentum=momentum, progress=progress)


def calibrate_da_(
    gm: fx.GraphModule, data: Iterable, *, momentum: float = 0.99, progress: bool = True
) -> fx.GraphModule:
    """Layer-wise DA error calibration (Algorithm 1, stage II), in place; returns ``gm``.

    For every batch the network runs twice: once with each DA-QCFS computing
    its *original* activation ``g_OA`` (clip-ReLU at θ, or the source QCFS),
    once as DA-QCFS. Then, per site ``l`` and channel (``μ`` = channel mean)::

        e_pre  = μ(W r_OA^{l-1}) − μ(W r_DA^{l-1})     ψ_DA ← α ψ_DA + (1 − α) e_pre
        e_post = μ(r_OA^l) − μ(r_DA^l)                φ_DA ← α φ_DA + (1 − α) e_post

    with ``α = momentum``. ``W r^{l-1}`` is the site's input (its pre-activation).
    Both passes of a batch use the same ψ_DA, φ_DA; all sites update together. Under a ``torch.distributed``
    process group ``data`` is this rank's shard and every μ is taken over the global batch (each site's input and
    output all-gathered), so ψ_DA, φ_DA are the same on every rank and bit-identical to one process's on the
    concatenated batches.
    """
    where = "fxsnn.calibrate_da"
    gm = require_graph_module(gm, where=where)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"fxsnn.calibrate_da: momentum must be in [0, 1); got {momentum}")
    named = [(n, m) for n, m in gm.named_modules() if isinstance(m, DAQCFS)]
    sites = [m for _, m in named]
    if not sites:
        raise ConversionError(
            "fxsnn.calibrate_da: the model has no DA-QCFS site; run fxsnn.passes.to_da_qcfs(gm, levels=...) first"
        )
    probes = [_MeanProbe(n) for n, _ in named]
    handles = [m.register_forward_hook(p) for m, p in zip(sites, probes)]
    try:
        with distributed.guard(where), preserved_state(gm), torch.no_grad():
            gm.eval()
            distributed.same_batches(data, where=where)
            for i, (x, _) in enumerate(batches(data, where=where, model=gm, progress=progress)):
                ref = _probe_pass(gm, x, sites, probes, reference=True, where=where, index=i)
                _probe_pass(gm, x, sites, probes, reference=False, where=where, index=i)
                for m, p, (pre_oa, post_oa) in zip(sites, probes, ref):
                    m.psi_da.mul_(momentum).add_((pre_oa - p.pre).to(m.psi_da.dtype), alpha=1 - momentum)
                    m.phi_da.mul_(momentum).add_((post_oa - p.post).to(m.phi_da.dtype), alpha=1 - momentum)
    finally:
        for h in handles:
            h.remove()
        for m in sites:
            m.reference = False
    return gm
