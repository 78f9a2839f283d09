"""What every data step takes: any iterable of batches (a DataLoader works as is)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import DataError, FxsnnError
from ..graph.edit import first_tensor
from .distributed import is_main

__all__ = [
    "Head",
    "batches",
    "check_batch",
    "check_finite",
    "check_targets",
    "input_of",
    "target_of",
    "run_batch",
    "progress_stage",
]

_STAGE: contextvars.ContextVar[str] = contextvars.ContextVar("fxsnn_progress_stage", default="")


@contextlib.contextmanager
def progress_stage(label: str) -> Iterator[None]:
    """Inside, every progress bar's description starts with ``label`` (``fxsnn.convert``: ``"stage 2 of 3, Stage 1"``)."""
    token = _STAGE.set(label)
    try:
        yield
    finally:
        _STAGE.reset(token)


def _description(where: str, desc: str | None) -> str:
    text = desc if desc is not None else where.rpartition(".")[2]
    prefix = _STAGE.get()
    return f"{prefix}: {text}" if prefix else text


def input_of(batch: object) -> Tensor | None:
    """A batch's input: the tensor itself, or the first element of a tuple / list; ``None`` for any other form
    (:func:`batches` then names the problem)."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    return None


def target_of(batch: object) -> object:
    """A batch's target: the second element of a tuple / list (whatever it is), ``None`` for a bare tensor or a
    one-element batch."""
    return None if isinstance(batch, Tensor) or len(batch) < 2 else batch[1]


def _split(batch, index: int, where: str) -> tuple[Tensor, Tensor | None]:
    x = input_of(batch)
    if x is not None:
        return x, target_of(batch)
    raise DataError(
        f"{where}: batch {index} is a {type(batch).__name__}; each batch must be an input tensor or an "
        "(input, target, ...) tuple whose first element is the input tensor"
    )


def batches(
    data: Iterable,
    *,
    where: str,
    need_targets: bool = False,
    model: nn.Module | None = None,
    progress: bool = True,
    total: int | None = None,
    desc: str | None = None,
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Yield ``(input, target_or_None)`` from any iterable of batches, with a tqdm bar (none when not ``progress``).

    The bar reads ``desc`` (default: the last part of ``where``), after the label of an enclosing
    :func:`progress_stage`.
    Under a ``torch.distributed`` process group the bar shows on rank 0 only.

    Raises :class:`fxsnn.DataError` for a bare tensor (it would iterate sample
    by sample), a batch of the wrong form, missing targets where
    ``need_targets``, an input holding NaN or ±Inf, an input on another device
    or dtype than ``model``, and data that yields no batch at all.
    """
    if isinstance(data, Tensor):
        raise DataError(
            f"{where}: data is a single tensor, which would be iterated sample by sample; pass a list of batches "
            "([x]), a list of (x, y) tuples, or a torch.utils.data.DataLoader"
        )
    try:
        iterator = iter(data)
    except TypeError:
        raise DataError(
            f"{where}: data must be an iterable of batches (e.g. a DataLoader); got {type(data).__name__}"
        ) from None
    if total is None:
        try:
            total = len(data)
        except TypeError:
            total = None
    n = 0
    for n, batch in enumerate(
        tqdm(iterator, desc=_description(where, desc), total=total, disable=not (progress and is_main()), leave=False),
        start=1,
    ):
        x, y = _split(batch, n - 1, where)
        if need_targets and y is None:
            raise DataError(
                f"{where} needs targets: batch {n - 1} has no target. Pass (input, target) batches, e.g. a DataLoader "
                "over a TensorDataset(x, y)"
            )
        check_finite(x, where=where, index=n - 1)
        if model is not None:
            check_batch(model, x, where=where, index=n - 1)
        yield x, y
    if n == 0:
        raise DataError(f"{where}: the data yielded no batches; pass at least one (input, target) batch")


def check_batch(model: nn.Module, x: Tensor, *, where: str, index: int = 0) -> None:
    """Raise :class:`fxsnn.DataError` if ``x`` is not on the model's device or not of its floating dtype."""
    ref = first_tensor(model)
    if ref is None or not x.is_floating_point():
        return
    if x.device != ref.device or x.dtype != ref.dtype:
        raise DataError(
            f"{where}: batch {index} is {x.dtype} on {x.device} but the model is {ref.dtype} on {ref.device}; "
            f"move the data (x.to({str(ref.device)!r}, {ref.dtype})) or the model (gm.to(...))"
        )


def check_finite(x: Tensor, *, where: str, index: int, site: str = "the input") -> None:
    """Raise :class:`fxsnn.DataError` naming batch ``index`` and ``site`` if the float tensor ``x`` holds NaN/±Inf."""
    if not x.is_floating_point() or bool(torch.isfinite(x).all()):
        return
    nan, inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
    raise DataError(
        f"{where}: batch {index} has non-finite values at {site} ({nan} NaN, {inf} ±Inf of {x.numel()}); "
        "remove or repair those samples (e.g. torch.nan_to_num, or drop them from the dataset) and run again"
    )


def check_targets(logits: Tensor, y: Tensor, *, where: str, index: int, in_range: bool = True) -> Tensor:
    """``y`` on the logits' device, checked as class indices for ``logits`` ``[B, C]`` (or dense ``[B, C, ...]``
    with ``y`` ``[B, ...]``); else :class:`fxsnn.DataError`.

    Refused: float (or bool) targets, a shape other than ``[B]`` (``[B, ...]`` for dense logits) and, with
    ``in_range``, the ignore index −100 and any label outside ``[0, C)``.
    """
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DataError(
            f"{where}: batch {index} has {y.dtype} targets; targets must be integer class indices [B] "
            "(convert them with y.long(); one-hot or soft targets are not supported)"
        )
    if logits.dim() < 2:
        raise DataError(
            f"{where}: batch {index}: the model's output has shape {tuple(logits.shape)}; the loss needs logits "
            "[B, classes] or dense [B, classes, ...] (check the input shape or the model's head)"
        )
    want = (logits.shape[0], *logits.shape[2:])
    if tuple(y.shape) != want:
        what = (
            "one class index per input, shape [B] (e.g. y.view(-1))"
            if logits.dim() == 2
            else (f"one class index per output position, shape {list(want)}")
        )
        raise DataError(
            f"{where}: batch {index} has targets of shape {tuple(y.shape)} for logits {tuple(logits.shape)}; "
            f"targets must be {what}"
        )
    y = y.to(logits.device)
    if not in_range:
        return y
    classes = logits.shape[1]
    bad = (y < 0) | (y >= classes)
    if bool(bad.any()):
        value = int(y[bad][0])
        hint = (
            "-100 is cross_entropy's ignore_index, which fxsnn does not support (it would count as a wrong "
            "prediction or give a loss of 0): drop those samples"
            if value == -100
            else f"labels must lie in [0, {classes}) for a model with {classes} outputs; check the labels or the model"
        )
        raise DataError(f"{where}: batch {index} has label {value} ({int(bad.sum())} bad of {y.numel()}); {hint}")
    return y


def run_batch(model: nn.Module, x: Tensor, *, where: str, index: int) -> object:
    """``model(x)``, with the raw errors a malformed batch gives turned into :class:`fxsnn.DataError`.

    A shape mismatch inside the model (a ``RuntimeError``) names the batch and its shape; BatchNorm in train mode
    on one value per channel (a one-sample batch, e.g. a DataLoader's last partial batch) names the fix.
    """
    try:
        return model(x)
    except FxsnnError:
        raise
    except ValueError as exc:
        if "more than 1 value per channel" not in str(exc):
            raise
        raise DataError(
            f"{where}: batch {index} (shape {tuple(x.shape)}) gives BatchNorm in train mode one value per channel, "
            "so it cannot normalise with batch statistics; drop that batch (DataLoader(..., drop_last=True)) or use "
            "batches of at least 2 samples"
        ) from exc
    except RuntimeError as exc:
        raise DataError(
            f"{where}: batch {index} of shape {tuple(x.shape)} does not fit the model ({type(exc).__name__}: {exc}); "
            "check the input shape (channels, image size) against what the model was built for"
        ) from exc


class Head:
    """The first ``n`` batches of a re-iterable ``data`` (all of them for ``n=None``), itself re-iterable;
    ``count`` is the number of batches the latest pass has yielded."""

    def __init__(self, data: Iterable, n: int | None):
        self.data, self.n = data, n
        self.count = 0

    def __iter__(self):
        self.count = 0
        for i, batch in enumerate(self.data):
            if self.n is not None and i >= self.n:
                return
            self.count += 1
            yield batch

    def __len__(self):
        n = len(self.data)  # TypeError when unknown: the bar then has no total
        return n if self.n is None else min(n, self.n)
