"""``fxsnn.convert``: the one-call path from a trained ReLU network to a parallel SNN (Algorithm 1 with Stages 1-2)."""

from __future__ import annotations

import numbers
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from torch import fx, nn

from .calibration.distributed import check_sharded
from .calibration.finetune import check_reiterable
from .calibration.front import front_end
from .calibration.preflight import seeded, validate
from .calibration.stage1 import recalibrate_bn
from .calibration.stage2 import tune_delta_b
from .config import FXSNN, METHODS, ConvertConfig, auto_percentile
from .graph.rate import rate_mode_blockers
from .modes import set_mode
from .passes.lower import lower_to_paraif
from .validation import check_positive_int

__all__ = ["convert"]


def _check_arguments(model, T, method: str, seed, config) -> ConvertConfig:
    where = "fxsnn.convert"
    if method not in METHODS:
        raise ValueError(f"{where}: unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    check_positive_int(T, "T", where=where)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{where}: seed must be an integer; got {seed!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"{where} expects a torch.nn.Module; got {type(model).__name__}")
    if config is not None and not isinstance(config, ConvertConfig):
        raise TypeError(
            f"{where}: config must be a ConvertConfig (e.g. ConvertConfig.recipe('paper')); got {type(config).__name__}"
        )
    return config if config is not None else FXSNN


def _timed(timings: dict, name: str, fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    timings[name] = time.perf_counter() - t0
    return out


NO_BATCHNORM = "the model has no BatchNorm layer"


def _has_batchnorm(gm: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gm.modules())


def _run(model, data, T: int, method: str, cfg: ConvertConfig, run: dict, progress: bool) -> fx.GraphModule:
    """The method's pipeline: front end, Stage 1 (skipped without BatchNorm), lowering, Stage 2."""
    timings, skipped, trace_args, head = run["seconds"], run["skipped"], run["trace"], run["head"]
    check_sharded(data, where="fxsnn.convert")
    baseline = method in ("fspc", "fspc_da")
    pct = cfg.theta_percentile if cfg.theta_percentile != "auto" else auto_percentile(T)
    gm = front_end(
        model,
        data,
        levels=T,
        percentile=None if baseline else pct,
        da=method != "fspc",
        momentum=cfg.da_momentum,
        calibration_batches=cfg.calibration_batches,
        progress=progress,
        **trace_args,
    )
    timings.update(gm.meta["fxsnn.front_end"]["seconds"])
    if method in ("spatial", "full") and not _has_batchnorm(gm):
        skipped["stage1"] = NO_BATCHNORM
        warnings.warn(
            f"fxsnn.convert: Stage 1 (BatchNorm recalibration) skipped: {NO_BATCHNORM}; the other steps of "
            f"method={method!r} ran",
            stacklevel=3,
        )
    elif method in ("spatial", "full"):
        gm = _timed(timings, "stage1", recalibrate_bn, gm, data, cfg.stage1, progress=progress, **head)
    snn = lower_to_paraif(gm, T=T, mode="spike")
    if method in ("temporal", "full"):
        snn = _timed(timings, "stage2", tune_delta_b, snn, data, cfg.stage2, T=T, progress=progress, **head)
    return snn


def convert(
    model: nn.Module,
    data: Iterable,
    *,
    T: int,
    method: str = "full",
    config: ConvertConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    leaf_modules: Iterable[type | str] = (),
    concrete_args: dict[str, Any] | None = None,
    loss_fn: Callable | None = None,
    output: Callable | None = None,
) -> fx.GraphModule:
    """Convert a trained ReLU network into a parallel SNN with ``T`` time steps; returns the lowered GraphModule.

    ``method`` is a row of the paper's ablation (Table 3):

    - ``"fspc"``: FS-PC — recorders (running max) → QCFS (``L = T``) → ParallelIF. No targets needed.
    - ``"fspc_da"``: FS-PC† — DA-QCFS with its error calibration (Algorithm 1, stage II). No targets needed.
    - ``"spatial"``: fxsnn's front end (:func:`fxsnn.front_end`: θ at ``theta_percentile``, DA-QCFS, error
      calibration) + Stage 1 (:func:`fxsnn.recalibrate_bn`). Needs targets.
    - ``"temporal"``: the same front end + Stage 2 (:func:`fxsnn.tune_delta_b`). Needs targets.
    - ``"full"``: front end + Stage 1 + Stage 2. Needs targets.

    ``data``: a re-iterable of ``(input, target)`` batches — a list, or a DataLoader (``shuffle=True`` for the
    stages); it is passed over several times. ``seed`` seeds torch's global generator for the whole conversion
    (inside :func:`torch.random.fork_rng`) and, when ``data`` is a DataLoader with its own ``generator=``
    (or a sampler with one), that generator too; both are put back afterwards, so the caller's random state
    is untouched. The same seed then gives a bit-identical network whenever all the randomness of ``data``
    comes from those torch generators, e.g. shuffling, in the main process or in workers seeded by the
    DataLoader: it does **not** hold for augmentations drawing from ``random`` / NumPy, for a custom sampler
    with another random source, or for data that changes between calls. ``config``: every knob, a
    :class:`ConvertConfig` (default: fxsnn's recipe, :data:`fxsnn.config.FXSNN`); override fields by dotted
    key, e.g. ``config=ConvertConfig.recipe("paper").override("stage1.epochs=2")``. ``model`` is never
    modified. Before touching ``data`` it refuses BatchNorm without running statistics
    (:class:`fxsnn.ConversionError`), float16 models for the methods that fine-tune (:class:`fxsnn.DataError`)
    and ``output_mode="rate"`` for a network that cannot run in rate mode (:class:`fxsnn.ModeError`).
    Under ``torch.distributed``, ``data`` is this rank's shard and every rank gets the same network (docs/distributed.md).

    ``leaf_modules`` / ``concrete_args``: passed to :func:`fxsnn.trace` (module types or qualified names kept
    opaque; non-tensor arguments specialised); a ``GraphModule`` you traced yourself is copied, not traced
    again. ``loss_fn(output, target)`` / ``output(model_output)``: the stages' loss and output adaptor
    (:func:`fxsnn.calibration.measure.measure`; defaults: the cross-entropy of the logits picked from a tensor,
    a ``{"out": ...}`` dict or a tuple's first element, per pixel for dense ``[B, classes, H, W]`` logits).

    A model without BatchNorm has no Stage 1: ``spatial`` and ``full`` then skip it with a warning, and
    ``result.meta["fxsnn.convert"]["skipped"]`` says so (``{"stage1": "the model has no BatchNorm layer"}``).

    The result runs in ``output_mode`` (spike by default; :func:`fxsnn.set_mode` switches) and keeps a
    summary in ``result.meta["fxsnn.convert"]`` (method, T, seed, config, per-step seconds, skipped steps).

    Example::

        >>> snn = fxsnn.convert(model, train_loader, T=4, method="full")
        >>> fxsnn.evaluate(fxsnn.set_mode(snn, "rate"), test_loader).top1
    """
    cfg = _check_arguments(model, T, method, seed, config)
    T = int(T)
    check_reiterable(data, where="fxsnn.convert")
    validate(model, T, method, cfg, leaf_modules=leaf_modules, concrete_args=concrete_args)
    run = {
        "seconds": {},
        "skipped": {},
        "trace": {"leaf_modules": tuple(leaf_modules), "concrete_args": concrete_args},
        "head": {"loss_fn": loss_fn, "output": output},
    }
    with seeded(data, int(seed)):
        snn = _run(model, data, T, method, cfg, run, progress)
    out_mode = cfg.output_mode if cfg.output_mode != "auto" else ("spike" if rate_mode_blockers(snn) else "rate")
    set_mode(snn, out_mode)
    snn.meta["fxsnn.convert"] = {
        "method": method,
        "T": T,
        "seed": int(seed),
        "config": cfg,
        "seconds": run["seconds"],
        "skipped": run["skipped"],
    }
    return snn
