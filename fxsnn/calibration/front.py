"""The front end (Algorithm 1, stages I-II): trace → recorders → θ → (DA-)QCFS → DA error calibration."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable

from torch import fx, nn

from ..errors import ConversionError
from ..graph.sites import check_analog_, find_sites
from ..graph.tracing import trace
from ..passes.qcfs import adopt_qcfs, to_da_qcfs, to_qcfs
from ..passes.recorders import insert_recorders
from ..validation import check_positive_int
from .batches import Head
from .ranges import calibrate_, calibrate_da_

__all__ = ["front_end", "qcfs_backbone"]


def qcfs_backbone(gm: fx.GraphModule) -> bool:
    """Whether every activation site of a traced model is already a QCFS activation (fxsnn's, or the user's own
    read by a convention of :mod:`fxsnn.graph.conventions`): a QCFS-trained backbone, whose θ and L come from the
    model. A model that mixes QCFS activations and ReLUs is refused with :class:`fxsnn.ConversionError`."""
    sites = find_sites(gm)
    qcfs = [s for s in sites if s.kind in ("QCFS", "DA-QCFS") or s.kind.startswith("QCFS-like ")]
    if not qcfs:
        return False
    other = [s for s in sites if s not in qcfs]
    if other:
        shown = ", ".join(f"'{s.name}' ({s.kind})" for s in other[:5]) + (" ..." if len(other) > 5 else "")
        raise ConversionError(
            f"fxsnn.front_end: the model mixes {len(qcfs)} QCFS activation(s) (e.g. '{qcfs[0].name}') with "
            f"{len(other)} other site(s): {shown}. fxsnn converts a model whose sites are all ReLUs (θ from "
            "recorders) or all QCFS (θ and L from the model); replace the remaining ReLUs by QCFS activations"
        )
    return True


def front_end(
    model: nn.Module,
    data: Iterable,
    *,
    levels: int,
    percentile: float | None = None,
    da: bool = True,
    momentum: float = 0.99,
    calibration_batches: int | None = None,
    progress: bool = True,
    leaf_modules: Iterable[type | str] = (),
    concrete_args: dict | None = None,
    allow_analog: bool = False,
) -> fx.GraphModule:
    """The data-dependent front end of every method: a new (DA-)QCFS GraphModule, ready to lower.

    1. :func:`fxsnn.trace` ``model``, :func:`fxsnn.passes.insert_recorders` (θ per channel: the running max of
       each ReLU site's input, or its ``percentile``-th percentile), :func:`fxsnn.calibrate` on ``data``;
    2. ``da=True``: :func:`fxsnn.passes.to_da_qcfs` with ``levels`` and the DA error calibration
       :func:`fxsnn.calibrate_da` (Algorithm 1, stage II, α = ``momentum``); ``da=False``:
       :func:`fxsnn.passes.to_qcfs` (FS-PC).

    A **QCFS-trained backbone** (:func:`qcfs_backbone`: every site already a QCFS activation, fxsnn's or the
    user's) skips the recorders and ``percentile``: θ (per channel) and L are the model's own
    (:func:`fxsnn.passes.adopt_qcfs`); ``da=False`` returns that QCFS network (lowering it at ``T ≠ L`` warns);
    ``da=True`` re-quantises it at ``levels`` and calibrates against the model's QCFS at L (Algorithm 1, ``g_OA``
    the backbone's QCFS). ``meta["fxsnn.front_end"]["theta"]`` says where θ came from (``"recorders"``/``"model"``).

    ``leaf_modules`` / ``concrete_args``: passed to :func:`fxsnn.trace` (a ``GraphModule`` is copied, not traced
    again). ``allow_analog=False`` refuses a network with nonlinear ops that would stay analog (GELU, SiLU,
    Sigmoid, ...) with :class:`fxsnn.ConversionError` listing them, before any data is read; ``True`` keeps them
    analog (a hybrid). ``calibration_batches``: at most this many leading batches of ``data`` (``None``: all).
    ``model`` is never modified. ``result.meta["fxsnn.front_end"]`` holds each step's ``"seconds"`` and the
    batches each data pass used (``"batches"``: ``{"calibrate": n, "calibrate_da": n}``).

    Example::

        >>> da = fxsnn.front_end(model, loader, levels=4, percentile=99.0)
        >>> snn = fxsnn.passes.lower_to_paraif(da, T=4)
    """
    where = "fxsnn.front_end"
    levels = check_positive_int(levels, "levels", where=where)
    if calibration_batches is not None:
        check_positive_int(calibration_batches, "calibration_batches", where=where)
    calib = Head(data, calibration_batches)
    seconds: dict[str, float] = {}
    timed = functools.partial(_timed, seconds)
    gm = timed("trace", trace, model, leaf_modules=leaf_modules, concrete_args=concrete_args)
    from_model = qcfs_backbone(gm)
    if from_model:  # θ and L are the model's: no recorder, no calibration batch
        gm = adopt_qcfs(gm)
        check_analog_(gm, allow_analog=allow_analog, where=where)  # marks a hybrid's ops for the later passes
        percentile = None
        used = {"calibrate": 0}
    else:
        gm = insert_recorders(gm, percentile=percentile, allow_analog=allow_analog)
        timed("calibrate", calibrate_, gm, calib, progress=progress)
        used = {"calibrate": calib.count}
    if da:
        gm = to_da_qcfs(gm, levels=levels)
        timed("calibrate_da", calibrate_da_, gm, calib, momentum=momentum, progress=progress)
        used["calibrate_da"] = calib.count
    elif not from_model:
        gm = to_qcfs(gm, levels=levels)
    gm.meta["fxsnn.front_end"] = {
        "levels": levels,
        "percentile": percentile,
        "da": da,
        "theta": "model" if from_model else "recorders",
        "seconds": seconds,
        "batches": used,
    }
    return gm


def _timed(seconds: dict[str, float], name: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, its wall time written to ``seconds[name]``."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    seconds[name] = time.perf_counter() - t0
    return out
