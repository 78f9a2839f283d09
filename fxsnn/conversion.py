"""``fxsnn.convert``: the one-call path from a trained ReLU network to a parallel SNN (Algorithm 1 with Stages 1-2)."""

from __future__ import annotations

import dataclasses
import numbers
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from torch import fx, nn

from .calibration.batches import Head, progress_stage
from .calibration.config import Stage1Config, TrainSpec, distill_share
from .calibration.distill import has_affine_batchnorm, im_adapted_teacher
from .calibration.distributed import check_sharded
from .calibration.finetune import check_reiterable
from .calibration.front import front_end
from .calibration.preflight import seeded, validate
from .calibration.stage1 import recalibrate_bn, reestimate_bn_stats
from .calibration.stage2 import tune_delta_b
from .config import FXSNN, METHODS, STAGE1_METHODS, STAGE2_METHODS, ConvertConfig, auto_percentile
from .errors import DataError
from .graph.rate import rate_mode_blockers
from .graph.tracing import trace
from .modes import set_mode
from .passes.lower import lower_to_paraif
from .report.stages import FRONT_END, STAGE1, STAGE2, StageReport, StageReports
from .validation import check_positive_int

__all__ = ["convert", "teacher_for"]


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
QCFS_BACKBONE = "a QCFS-trained backbone: θ and the levels L are the model's own"


def _has_batchnorm(gm: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gm.modules())


def _stage_plan(model: nn.Module, method: str) -> dict[str, str | None]:
    """Each stage of ``method`` mapped to ``None`` (it runs) or the reason it is skipped."""
    one = method in STAGE1_METHODS
    return {
        FRONT_END: None,
        STAGE1: (None if _has_batchnorm(model) else NO_BATCHNORM) if one else f"method {method!r} has no Stage 1",
        STAGE2: None if method in STAGE2_METHODS else f"method {method!r} has no Stage 2",
    }


def teacher_for(
    model: nn.Module,
    data: Iterable,
    teacher: str,
    *,
    spec: TrainSpec | None = None,
    output: Callable | None = None,
    loss_fn: Callable | None = None,
    trace_args: dict | None = None,
    stat_batches: int | None = None,
    progress: bool = True,
) -> nn.Module:
    """The ANN named by a :data:`fxsnn.config.TEACHERS` choice (``"auto"`` resolved), built from ``data``.

    ``"model"``, or any choice for a model without BatchNorm: ``model`` itself (the stages copy it);
    ``"adapted"``: :func:`fxsnn.calibration.reestimate_bn_stats`; ``"im"``:
    :func:`fxsnn.calibration.distill.im_adapted_teacher` with the fine-tuning run ``spec`` (``None``: one epoch at
    1e-3) and ``output``; input-only batches suffice for these. ``"labels"``: :func:`fxsnn.recalibrate_bn` on
    the model with ``train_weights=False`` (BN statistics re-estimated, then γ, β tuned with ``loss_fn``, default
    the cross-entropy) under ``spec`` (``None``: one epoch of Stage 1's default schedule; :func:`fxsnn.convert`
    passes one epoch of ``config.stage1.train``) on the model traced with ``trace_args`` (``leaf_modules``,
    ``concrete_args`` of :func:`fxsnn.trace`, as :func:`fxsnn.convert` traces it); it needs ``(input, target)``
    batches and returns a frozen, traced copy. ``stat_batches``: the ``"adapted"`` and ``"labels"`` teachers'
    BN statistics (Eq. 10) are taken over at most this many leading batches (``None``: all;
    :func:`fxsnn.convert` passes ``config.stage1.stat_batches``, as the student's Stage 1 takes them).
    """
    if teacher == "auto":
        raise ValueError("teacher_for: resolve teacher='auto' first (ConvertConfig.teacher_choice(method))")
    if teacher == "model" or not _has_batchnorm(model):
        return model
    if teacher == "adapted":
        return reestimate_bn_stats(model, Head(data, stat_batches), progress=progress)
    if teacher == "labels":
        config = Stage1Config(
            train_weights=False, train=spec or FXSNN.teacher_spec("labels"), stat_batches=stat_batches
        )
        traced = trace(model, **(trace_args or {}))
        return recalibrate_bn(traced, data, config, progress=progress, loss_fn=loss_fn, output=output)
    return im_adapted_teacher(model, data, spec, progress=progress, output=output)


def _teacher(model: nn.Module, data, method: str, cfg: ConvertConfig, run: dict, progress: bool):
    """The ANN the distilling stages distil from (:meth:`ConvertConfig.teacher_choice`, :func:`teacher_for`), or
    ``None`` when no stage distils (:meth:`ConvertConfig.distils`); its building time is
    ``run["seconds"]["teacher"]``.

    ``"im"`` or ``"labels"`` on a model whose BatchNorm layers have no affine terms falls back to ``"adapted"``,
    with a warning.
    """
    if not cfg.distils(method):
        return None
    choice = cfg.teacher_choice(method) if _has_batchnorm(model) else "model"  # without BN: the model itself
    if choice in ("im", "labels") and not has_affine_batchnorm(model):
        warnings.warn(
            f"fxsnn.convert: teacher={choice!r} tunes BatchNorm affine terms, and the model's BatchNorm layers have "
            "none; distilling from the model with its BN statistics re-estimated instead (teacher='adapted')",
            stacklevel=4,
        )
        choice = "adapted"
    run["teacher"] = choice
    if choice == "model":
        teacher = model  # nothing to build, nothing timed
    else:
        spec, head = cfg.teacher_spec(choice), run["head"]
        kw = {"spec": spec, "progress": progress, "trace_args": run["trace"], "stat_batches": cfg.stage1.stat_batches}
        kw.update(head)
        try:
            teacher = _timed(run["seconds"], "teacher", teacher_for, model, data, choice, **kw)
        except DataError as exc:
            if choice != "labels":
                raise
            raise DataError(
                f"fxsnn.convert: building teacher='labels' (the ANN a labelled stage with distill_weight > 0 distils "
                f"from) failed: {exc}. Calibration images without labels: set stage1.objective=distill and "
                "stage2.objective=distill (label-free); with labels but no teacher: stage1.distill_weight=0"
            ) from exc
        run["teacher built"] = f", built in {run['seconds']['teacher']:.1f} s"  # said by the first stage using it
    feature = any(c.feature_weight > 0 for c in cfg.tuning_stages(method))
    if feature and not isinstance(teacher, fx.GraphModule):  # feature matching: traced as the model is, so
        teacher = trace(teacher, **run["trace"])  # that its sites are the student's ('labels' already is)
    return teacher


def _run(model, data, T: int, method: str, cfg: ConvertConfig, run: dict, progress: bool) -> fx.GraphModule:
    """The method's pipeline: front end, Stage 1 (skipped without BatchNorm), lowering, Stage 2."""
    timings, skipped, trace_args, head = run["seconds"], run["skipped"], run["trace"], run["head"]
    plan, reports = _stage_plan(model, method), run["stages"]
    running = [name for name, why in plan.items() if why is None]

    def stage(name: str):
        return progress_stage(f"stage {running.index(name) + 1} of {len(running)}, {name}")

    check_sharded(data, where="fxsnn.convert")
    with progress_stage(f"teacher ({cfg.teacher_choice(method)})"):
        teacher = _teacher(model, data, method, cfg, run, progress)
    baseline = method in ("fspc", "fspc_da")
    pct = cfg.theta_percentile if cfg.theta_percentile != "auto" else auto_percentile(T)
    t0 = time.perf_counter()
    with stage(FRONT_END):
        gm = front_end(
            model,
            data,
            allow_analog=run["allow_analog"],
            levels=T,
            percentile=None if baseline else pct,
            da=method != "fspc",
            momentum=cfg.da_momentum,
            calibration_batches=cfg.calibration_batches,
            progress=progress,
            **trace_args,
        )
    timings.update(gm.meta["fxsnn.front_end"]["seconds"])
    reports[FRONT_END] = _front_end_report(gm.meta["fxsnn.front_end"], seconds=time.perf_counter() - t0)
    if gm.meta["fxsnn.front_end"]["theta"] == "model":
        skipped["recorders"] = QCFS_BACKBONE
    if method in STAGE1_METHODS and not _has_batchnorm(gm):
        skipped["stage1"] = plan[STAGE1] = NO_BATCHNORM
        warnings.warn(
            f"fxsnn.convert: Stage 1 (BatchNorm recalibration) skipped: {NO_BATCHNORM}; the other steps of "
            f"method={method!r} ran",
            stacklevel=3,
        )
    elif plan[STAGE1] is None:
        with stage(STAGE1):
            gm = _timed(
                timings, "stage1", recalibrate_bn, gm, data, cfg.stage1, progress=progress, teacher=teacher, **head
            )
        reports[STAGE1] = gm.meta["fxsnn.stage1"] = _with_teacher_note(gm.meta["fxsnn.stage1"], cfg.stage1, run)
    snn = lower_to_paraif(gm, T=T, mode="spike")
    if plan[STAGE2] is None:
        with stage(STAGE2):
            snn = _timed(
                timings, "stage2", tune_delta_b, snn, data, cfg.stage2, T=T, progress=progress, teacher=teacher, **head
            )
        reports[STAGE2] = snn.meta["fxsnn.stage2"] = _with_teacher_note(snn.meta["fxsnn.stage2"], cfg.stage2, run)
    for name, why in plan.items():
        reports.setdefault(name, StageReport.skipped(name, why))
    return snn


def _with_teacher_note(report: StageReport, config, run: dict) -> StageReport:
    """``report`` with a note of the teacher its stage distilled from (and the seconds building it took)."""
    share = distill_share(config)
    if share == 0 or run.get("teacher") is None:
        return report
    what = "distilled" if share == 1 else f"{share:g} of the loss distilled"
    note = f"{what} from teacher {run['teacher']!r}{run.pop('teacher built', '')}"  # built once, said once
    return dataclasses.replace(report, note=f"{report.note}; {note}" if report.note else note)


def _finish(snn: fx.GraphModule, cfg: ConvertConfig, run: dict, summary: dict) -> fx.GraphModule:
    """The output mode set, and ``snn.meta["fxsnn.convert"]``: ``summary`` + seconds, skipped steps, stage reports."""
    stages = _stage_reports(snn, run["stages"])
    out_mode = cfg.output_mode if cfg.output_mode != "auto" else ("spike" if rate_mode_blockers(snn) else "rate")
    set_mode(snn, out_mode)
    snn.meta["fxsnn.convert"] = {**summary, "seconds": run["seconds"], "skipped": run["skipped"], "stages": stages}
    return snn


def _stage_reports(snn: fx.GraphModule, reports: dict) -> StageReports:
    """The rows in order; a Stage 1 / 2 report in ``snn.meta`` carried over from an input GraphModule is dropped."""
    stages = StageReports(reports[name] for name in (FRONT_END, STAGE1, STAGE2))
    for name, key in ((STAGE1, "fxsnn.stage1"), (STAGE2, "fxsnn.stage2")):
        if not stages[name].ran:
            snn.meta.pop(key, None)
    return stages


def _front_end_report(meta: dict, *, seconds: float) -> StageReport:
    """The front end's row: θ and DA calibration batches, θ's percentile, seconds."""
    kind = "DA-QCFS" if meta["da"] else "QCFS"
    return StageReport(
        FRONT_END,
        seconds=seconds,
        batches=meta["batches"]["calibrate"],
        theta_percentile=meta["percentile"],
        da_batches=meta["batches"].get("calibrate_da"),
        note=f"{kind} with L = {meta['levels']}",
    )


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
    allow_analog: bool = False,
) -> fx.GraphModule:
    """Convert a trained ReLU network into a parallel SNN with ``T`` time steps; returns the lowered GraphModule.

    ``method`` is a row of the paper's ablation (Table 3): ``"fspc"`` (FS-PC: recorders with the running max →
    QCFS with ``L = T`` → ParallelIF), ``"fspc_da"`` (FS-PC†: DA-QCFS and its error calibration, Algorithm 1
    stage II), ``"spatial"`` (fxsnn's front end, :func:`fxsnn.front_end`, + Stage 1, :func:`fxsnn.recalibrate_bn`),
    ``"temporal"`` (front end + Stage 2, :func:`fxsnn.tune_delta_b`), ``"full"`` (front end + both stages). The
    stages need targets, unless their ``objective`` is ``"distill"`` (label-free: the KL divergence to the ANN's
    logits, :mod:`fxsnn.calibration.distill`).

    ``data``: a re-iterable of ``(input, target)`` batches (or input-only batches for label-free stages) — a
    list, or a DataLoader (``shuffle=True`` for the stages); it is passed over several times. ``seed`` seeds
    torch's global generator for the whole conversion (inside :func:`torch.random.fork_rng`) and, when ``data``
    is a DataLoader with its own ``generator=`` (or a sampler with one), that generator too; both are put back
    afterwards. The same seed then gives a bit-identical network whenever all the randomness of ``data`` comes
    from those torch generators (shuffling, in the main process or in workers seeded by the DataLoader); it does
    **not** hold for augmentations drawing from ``random`` / NumPy, a sampler with another random source, or
    data that changes between calls. ``config``: every knob, a :class:`ConvertConfig` (default: fxsnn's recipe,
    :data:`fxsnn.config.FXSNN`), e.g. ``ConvertConfig.recipe("paper").override("stage1.epochs=2")``. ``model``
    is never modified. Before touching ``data`` it refuses BatchNorm without running statistics and a hybrid
    not asked for (:class:`fxsnn.ConversionError`), float16 models for the methods that fine-tune
    (:class:`fxsnn.DataError`) and ``output_mode="rate"`` for a network that cannot run in rate mode
    (:class:`fxsnn.ModeError`).

    ``leaf_modules`` / ``concrete_args``: passed to :func:`fxsnn.trace`; a ``GraphModule`` you traced yourself
    is copied, not traced again. ``loss_fn(output, target)`` / ``output(model_output)``: the stages' loss and
    output adaptor (:func:`fxsnn.calibration.measure.measure`; defaults: the cross-entropy of the logits picked
    from a tensor, a ``{"out": ...}`` dict or a tuple's first element, per pixel for dense logits; under Stage 1's
    ``distill_weight`` α the ``1 − α`` part, with integer targets). ``allow_analog``: nonlinear ops that are no ReLU-family site (GELU, SiLU, Sigmoid, an opaque leaf, ...:
    :func:`fxsnn.graph.sites.find_hybrid_ops`) are refused, listed in the error; ``True`` keeps them analog in a
    marked hybrid (docs/architecture.md). A QCFS-trained backbone skips the recorders (θ and L are its own).
    A model without BatchNorm has no Stage 1: ``spatial`` and ``full`` skip it with a warning. Under a
    ``torch.distributed`` process group each rank passes its shard of the data and every rank gets the same
    network (docs/distributed.md).

    The result runs in ``output_mode`` (spike by default; :func:`fxsnn.set_mode` switches).
    ``result.meta["fxsnn.convert"]`` holds method, T, seed, config, per-step seconds, ``skipped`` steps with
    their reasons (e.g. ``{"stage1": "the model has no BatchNorm layer"}``), ``hybrid`` and its ``analog`` ops,
    and ``"stages"``: a :class:`fxsnn.report.StageReports` table, one :class:`fxsnn.report.StageReport` per
    stage (batches, epochs, steps, training and held-out loss start → end, whether early stopping kept step 0,
    seconds; a stage that did not run says why). With ``progress``, each bar says its stage
    (``stage 2 of 3, Stage 1: recalibrate_bn epoch 1 of 3``).

    Example::

        >>> snn = fxsnn.convert(model, train_loader, T=4, method="full")
        >>> fxsnn.evaluate(fxsnn.set_mode(snn, "rate"), test_loader).top1
    """
    cfg = _check_arguments(model, T, method, seed, config)
    T = int(T)
    check_reiterable(data, where="fxsnn.convert")
    hybrid = validate(
        model, T, method, cfg, leaf_modules=leaf_modules, concrete_args=concrete_args, allow_analog=allow_analog
    )
    run = {
        "allow_analog": allow_analog,
        "seconds": {},
        "skipped": {},
        "trace": {"leaf_modules": tuple(leaf_modules), "concrete_args": concrete_args},
        "head": {"loss_fn": loss_fn, "output": output},
        "stages": {},
    }
    with seeded(data, int(seed)):
        snn = _run(model, data, T, method, cfg, run, progress)
    summary = {"method": method, "T": T, "seed": int(seed), "config": cfg}
    return _finish(snn, cfg, run, {**summary, "hybrid": bool(hybrid), "analog": hybrid.to_dict()})
