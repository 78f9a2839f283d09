"""What every data step takes: any iterable of batches (a DataLoader works as is)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import DataError
from ..graph.edit import first_tensor

__all__ = ["batches", "check_batch"]


def _split(batch, index: int, where: str) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        target = batch[1] if len(batch) > 1 else None
        return batch[0], target
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
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Yield ``(input, target_or_None)`` from any iterable of batches, with a tqdm bar.

    Raises :class:`fxsnn.DataError` for a bare tensor (it would iterate sample
    by sample), a batch of the wrong form, missing targets where
    ``need_targets``, an input on another device or dtype than ``model``, and
    data that yields no batch at all.
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
        tqdm(iterator, desc=where.rpartition(".")[2], total=total, disable=not progress, leave=False), start=1
    ):
        x, y = _split(batch, n - 1, where)
        if need_targets and y is None:
            raise DataError(
                f"{where} needs targets: batch {n - 1} has no target. Pass (input, target) batches, e.g. a DataLoader "
                "over a TensorDataset(x, y)"
            )
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
