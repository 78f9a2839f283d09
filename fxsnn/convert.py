"""``fxsnn.convert``: the one-call path from a trained ReLU network to a parallel SNN (Algorithm 1 with Stages 1-2)."""

from __future__ import annotations

import numbers
import time
from collections.abc import Iterable

import torch
from torch import fx, nn

from .calibrate.finetune import check_reiterable
from .calibrate.ranges import calibrate, calibrate_da
from .calibrate.stage1 import recalibrate_bn
from .calibrate.stage2 import tune_delta_b
from .config import METHODS, ConvertConfig, auto_percentile
from .graph.rate import rate_mode_blockers
from .graph.tracing import trace
from .modes import set_mode
from .passes.lower import lower_to_paraif
from .passes.qcfs import to_da_qcfs, to_qcfs
from .passes.recorders import insert_recorders
from .validation import check_positive_int

__all__ = ["convert"]


class _Head:
    """The first ``n`` batches of a re-iterable ``data`` (all of them for ``n=None``), itself re-iterable."""

    def __init__(self, data: Iterable, n: int | None):
        self.data, self.n = data, n

    def __iter__(self):
        for i, batch in enumerate(self.data):
            if self.n is not None and i >= self.n:
                return
            yield batch

    def __len__(self):
        n = len(self.data)  # TypeError when unknown: the bar then has no total
        return n if self.n is None else min(n, self.n)


def convert(
    model: nn.Module,
    data: Iterable,
    *,
    T: int,
    method: str = "full",
    seed: int = 0,
    recipe: str = "fxsnn",
    config: ConvertConfig | None = None,
    progress: bool = True,
    **options,
) -> fx.GraphModule:
    """Convert a trained ReLU network into a parallel SNN with ``T`` time steps; returns the lowered GraphModule.

    ``method`` is a row of the paper's ablation (Table 3):

    - ``"fspc"``: FS-PC — recorders (running max) → QCFS (``L = T``) → ParallelIF. No targets needed.
    - ``"fspc_da"``: FS-PC† — DA-QCFS with its error calibration (Algorithm 1, stage II). No targets needed.
    - ``"spatial"``: fxsnn's front end (θ at ``theta_percentile``, DA-QCFS, error calibration) + Stage 1
      (:func:`fxsnn.recalibrate_bn`). Needs targets.
    - ``"temporal"``: the same front end + Stage 2 (:func:`fxsnn.tune_delta_b`). Needs targets.
    - ``"full"``: front end + Stage 1 + Stage 2. Needs targets.

    ``data``: a re-iterable of ``(input, target)`` batches — a list, or a DataLoader (``shuffle=True`` for the
    stages); it is passed over several times. ``seed`` seeds torch's generator for the whole conversion (a
    shuffling DataLoader draws from it), inside :func:`torch.random.fork_rng`, so the caller's random state
    is untouched and the same seed gives a bit-identical network. Knobs: ``recipe`` (``"fxsnn"`` or
    ``"paper"``) picks the base :class:`ConvertConfig`, or pass ``config=``; any field can be overridden by
    keyword (``convert(m, dl, T=4, s1_epochs=1)``). ``model`` is never modified.

    The result runs in ``output_mode`` (spike by default; :func:`fxsnn.set_mode` switches) and keeps a
    summary in ``result.meta["fxsnn.convert"]`` (method, T, seed, config, per-step seconds).

    Example::

        >>> snn = fxsnn.convert(model, train_loader, T=4, method="full")
        >>> fxsnn.evaluate(fxsnn.set_mode(snn, "rate"), test_loader).top1
    """
    where = "fxsnn.convert"
    if method not in METHODS:
        raise ValueError(f"{where}: unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    T = check_positive_int(T, "T", where=where)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{where}: seed must be an integer; got {seed!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"{where} expects a torch.nn.Module; got {type(model).__name__}")
    cfg = (config if config is not None else ConvertConfig.recipe(recipe)).replace(**options)
    check_reiterable(data, where=where)
    calib = _Head(data, cfg.calibration_batches)
    timings: dict[str, float] = {}

    def timed(name, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        timings[name] = time.perf_counter() - t0
        return out

    baseline = method in ("fspc", "fspc_da")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        gm = timed("trace", trace, model)
        pct = cfg.theta_percentile if cfg.theta_percentile != "auto" else auto_percentile(T)
        gm = insert_recorders(gm, percentile=None if baseline else pct)
        timed("calibrate", calibrate, gm, calib, progress=progress)
        if method == "fspc":
            gm = to_qcfs(gm, levels=T)
        else:
            gm = to_da_qcfs(gm, levels=T)
            timed("calibrate_da", calibrate_da, gm, calib, momentum=cfg.da_momentum, progress=progress)
        if method in ("spatial", "full"):
            gm = timed(
                "stage1",
                recalibrate_bn,
                gm,
                data,
                epochs=cfg.s1_epochs,
                steps=cfg.s1_steps,
                lr=cfg.s1_lr,
                lr_min=cfg.s1_lr_min,
                warmup=cfg.s1_warmup,
                bn_mode=cfg.s1_bn_mode,
                train_theta=cfg.s1_train_theta,
                theta_lr=cfg.s1_theta_lr,
                restat_after=cfg.s1_restat_after,
                progress=progress,
            )
        snn = lower_to_paraif(gm, T=T, mode="spike")
        if method in ("temporal", "full"):
            snn = timed(
                "stage2",
                tune_delta_b,
                snn,
                data,
                T=T,
                epochs=cfg.s2_epochs,
                steps=cfg.s2_steps,
                lr=cfg.s2_lr,
                lr_min=cfg.s2_lr_min,
                warmup=cfg.s2_warmup,
                width=cfg.s2_width,
                parameterization=cfg.s2_parameterization,
                clip_grad=cfg.s2_clip_grad,
                holdout=cfg.s2_holdout,
                patience=cfg.s2_patience,
                mode=cfg.s2_mode,
                progress=progress,
            )
    out_mode = cfg.output_mode if cfg.output_mode != "auto" else ("spike" if rate_mode_blockers(snn) else "rate")
    set_mode(snn, out_mode)
    snn.meta["fxsnn.convert"] = {"method": method, "T": T, "seed": int(seed), "config": cfg, "seconds": timings}
    return snn
