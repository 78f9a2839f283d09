"""Data steps on many processes (``torch.distributed``): one rank's shard each, the network of one process.

Without an initialised process group of two or more ranks every function here is the identity (or a no-op), so
the single-process code paths are unchanged bit for bit. With one (``torchrun --nproc_per_node N``, any backend:
gloo on CPU, NCCL on CUDA with each rank on ``cuda:LOCAL_RANK``), each data step runs on every rank with that
rank's batches, and the **global batch** of step ``i`` is the concatenation of the ranks' batch ``i``; every rank
must yield the same number of batches per pass (a :class:`~torch.utils.data.distributed.DistributedSampler`
gives that), which is checked. What is reduced, and how exactly it matches one process fed the global batches:

- recorder calibration: each batch's per-channel maximum is all-reduced with MAX *before* it is recorded, so
  every rank keeps the same running max and grows its histogram range ``hist_hi`` exactly as one process would;
  the histogram counts (int64) are summed once at the end. Max and integer counts are exact: θ is
  **bit-identical** to one process;
- DA error calibration (Algorithm 1): each site's input and output are all-gathered (:func:`cat_batches`) and
  the channel means μ(·) taken over the global batch exactly as one process takes them, every step;
- BatchNorm re-estimation (Eq. 10): each BN's input is all-gathered, the BN normalises the global batch with
  its statistics (as one process does in train mode) and the float64 sums Σx, Σx² are those of the global
  batch. Given the same network, ψ_DA, φ_DA and the BN statistics are then **bit-identical** to one process
  (this moves every site's and BN's activations once per batch of those passes, in their own memory layout;
  exactness matters here because a QCFS floor turns a last-bit difference in one layer into whole quanta in
  the next: normalising with the ranks' summed float64 moments instead gave ResNet-20 BN statistics 0.18
  apart). It assumes that a sample's forward pass does not depend on the batch size (true of the CPU kernels
  measured; cuDNN may pick other kernels for another batch size, and then these agree up to rounding only);
- fine-tuning (Stages 1 and 2): the gradients of the few trained tensors are averaged, weighted by each rank's
  number of targets (the gradient of the global batch's mean loss), with **one all-reduce of a flat buffer per
  step** — not DDP: fxsnn trains a few ``[C]`` tensors that are not the parameters of one module (Stage 1 trains
  ``z = θ/c``, Stage 2 a parametrization's ``original``), DDP would also broadcast every buffer and wrap the
  forward, and a single flat all-reduce is the least communication there is. The held-out loss is the global
  one, so early stopping and the best state are decided identically on every rank (the final state is also
  broadcast from rank 0); a non-finite loss on one rank raises :class:`NonFiniteLossError` on every rank.

**Faults.** Every collective goes through :func:`_collective`: it is issued asynchronously and waited for while
polling the rendezvous store; when it fails (a peer died: gloo reports the closed connection at once; or a peer
did not arrive within the process group's ``timeout``) the rank raises :class:`RankFailure`. A rank on which a
data step raises leaves its error in the store (:func:`guard`), so the others, waiting in a collective, stop at
once with a :class:`RankFailure` that quotes it instead of waiting for the timeout; errors that every rank
raises together (mismatched batch counts, a non-finite loss, the global held-out loss) are not reported there.
"""

from __future__ import annotations

import collections.abc
import contextlib
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import CalibrationError, DataError

__all__ = [
    "RankFailure",
    "active",
    "rank",
    "world_size",
    "is_main",
    "all_max_",
    "all_sum_",
    "sum_histograms_",
    "cat_batches",
    "same_count",
    "same_batches",
    "reduce_step_",
    "broadcast_",
    "guard",
    "check_sharded",
]


class RankFailure(CalibrationError):
    """A collective of a distributed data step failed: another rank raised, died, or did not arrive within the
    process group's timeout. The other ranks' logs hold the first error."""


def active() -> bool:
    """True when ``torch.distributed`` has an initialised process group of two or more ranks."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """The number of ranks (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on rank 0 (and without a process group): the rank that prints progress and writes files."""
    return rank() == 0


def _timeout() -> str:
    try:
        from torch.distributed.distributed_c10d import _get_default_group

        t = _get_default_group().options._timeout  # gloo / NCCL keep the group's timeout here
        return f"{t.total_seconds():g} s"
    except Exception:  # noqa: BLE001 - only used to word the message
        return "the process group's timeout"


def _comm_device(t: Tensor) -> torch.device:
    """Where a collective on ``t`` runs: NCCL needs this rank's CUDA device, gloo takes CPU (or CUDA) tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return t.device


#: the key of the rendezvous store under which a failing rank leaves its error for the others
FAILED_KEY = "fxsnn/failed"


def _store():
    """The default process group's rendezvous store, or ``None`` (then only the group's timeout ends a wait)."""
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except Exception:  # noqa: BLE001 - a private helper of torch.distributed; without it, the timeout still holds
        return None


def _reported_failure(store) -> str | None:
    try:
        return store.get(FAILED_KEY).decode(errors="replace") if store.check([FAILED_KEY]) else None
    except Exception:  # noqa: BLE001 - the store's host (rank 0) may itself be gone: the collective reports that
        return None


def _wait(work, *, where: str) -> None:
    """Wait for an async collective, polling the store for a failure another rank reported (sleeps 0.1 ms, doubling
    to 50 ms), so a rank that raised ends the others' waits at once; ``work.wait()`` raises the backend's error
    (a peer that died, or the process group's timeout)."""
    store, delay = _store(), 1e-4
    while store is not None and not work.is_completed():
        time.sleep(delay)
        delay = min(2 * delay, 0.05)
        note = _reported_failure(store)
        if note is not None:
            raise RankFailure(
                f"{where}: rank {dist.get_rank()} of {dist.get_world_size()} stopped because another rank failed: "
                f"{note}"
            )
    work.wait()


def _collective(fn, t: Tensor, *args, where: str, **kwargs) -> Tensor:
    """Run ``fn(buf, ..., async_op=True)`` in place on ``t`` (moved to the communication device and back) and wait
    for it (:func:`_wait`); :class:`RankFailure` when it fails."""
    dev = _comm_device(t)
    buf = t if t.device == dev else t.to(dev)
    try:
        _wait(fn(buf, *args, async_op=True, **kwargs), where=where)
    except RankFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - gloo/NCCL raise RuntimeError or DistBackendError subclasses
        raise RankFailure(
            f"{where}: rank {dist.get_rank()} of {dist.get_world_size()}: a collective ({fn.__name__}) failed — another "
            f"rank died or did not arrive within {_timeout()}. The other ranks' logs hold the first error; raise the "
            f"timeout with torch.distributed.init_process_group(timeout=...) if a rank is just slow "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    if buf is not t:
        t.copy_(buf)
    return t


def all_max_(t: Tensor, *, where: str) -> Tensor:
    """``t ← max over ranks of t``, elementwise, in place (exact); ``t`` unchanged without a process group."""
    return _collective(dist.all_reduce, t, op=dist.ReduceOp.MAX, where=where) if active() else t


def all_sum_(t: Tensor, *, where: str) -> Tensor:
    """``t ← Σ over ranks of t``, in place (exact for integer tensors); ``t`` unchanged without a process group."""
    return _collective(dist.all_reduce, t, op=dist.ReduceOp.SUM, where=where) if active() else t


def sum_histograms_(hists: Sequence[Tensor], before: Sequence[Tensor], *, where: str) -> None:
    """``h ← before + Σ_ranks (h − before)`` for each integer histogram: the counts this call added on every rank,
    summed exactly (one all-reduce of the concatenated counts), on top of the counts the ranks shared before."""
    if not active() or not hists:
        return
    flat = torch.cat([(h - b).reshape(-1) for h, b in zip(hists, before)])
    all_sum_(flat, where=where)
    offset = 0
    for h, b in zip(hists, before):
        n = h.numel()
        h.copy_(b + flat[offset : offset + n].view_as(h))
        offset += n


def _all_gather(out: Tensor, inp: Tensor, *, async_op: bool):
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # the new name since torch 2.14
    return gather(out, inp, async_op=async_op)


def cat_batches(t: Tensor, *, where: str) -> tuple[Tensor, int]:
    """``(global, offset)``: the ranks' ``t`` concatenated along dim 0 in rank order (the global batch, as one
    process would hold it) and where this rank's rows start. Two collectives: the batch sizes (they may differ),
    then an all-gather of ``t`` padded to the largest. ``(t, 0)`` without a process group."""
    if not active():
        return t, 0
    sizes = torch.zeros(world_size(), dtype=torch.float64)
    sizes[rank()] = t.shape[0]
    all_sum_(sizes, where=where)
    counts = [int(n) for n in sizes.tolist()]
    most = max(counts)
    buf = t.detach()
    if buf.shape[0] < most:
        buf = torch.cat([buf, buf.new_zeros((most - buf.shape[0], *buf.shape[1:]))])
    buf = buf.contiguous()
    out = buf.new_empty((most * world_size(), *buf.shape[1:]))
    _collective(_all_gather, out, buf.to(_comm_device(out)), where=where)
    parts = [out[r * most : r * most + n] for r, n in enumerate(counts)]
    return torch.cat(parts).contiguous(memory_format=_memory_format(t)), sum(counts[: rank()])


def _memory_format(t: Tensor) -> torch.memory_format:
    """``t``'s layout (channels-last or contiguous): the gathered batch keeps it, so that kernels that depend on
    the layout (a channels-last BatchNorm reduces in another order) compute what they compute for one process."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if t.dim() == 5 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def same_count(n: int, *, what: str, where: str) -> int:
    """``n`` (e.g. batches per pass), after checking that every rank has the same: else a DataError on every rank."""
    if not active():
        return n
    both = torch.tensor([n, -n], dtype=torch.float64)
    all_max_(both, where=where)
    hi, lo = int(both[0]), -int(both[1])
    if hi != lo:
        err = DataError(
            f"{where}: the ranks have between {lo} and {hi} {what} (this rank, {rank()}: {n}); every rank must yield "
            "the same number of batches per pass. Shard the data with a torch.utils.data.distributed."
            "DistributedSampler (it pads every rank to the same length) and the same batch_size on every rank"
        )
        err.agreed = True  # every rank raises it: the process group stays usable
        raise err
    return n


def same_batches(data: Iterable, *, where: str) -> None:
    """Check that every rank's ``data`` has the same number of batches per pass (``len(data)``, or a dry pass
    over a re-iterable without a length; a one-shot iterator is not counted). No-op without a process group."""
    if not active():
        return
    try:
        n = len(data)
    except TypeError:
        if isinstance(data, collections.abc.Iterator):
            return
        n = sum(1 for _ in data)
    same_count(n, what="batches per pass", where=where)


def reduce_step_(
    params: Sequence[Tensor], weight: float, problem: str | None, loss: float, *, where: str
) -> tuple[str | None, float]:
    """One fine-tuning step's reduction, a single all-reduce of a flat buffer: the collective "did any rank fail"
    check, the gradients and the loss. Returns ``(problem, loss)``: ``problem`` is ``None`` when no rank had one,
    else this rank's own or a message naming the failing ranks; ``loss`` the global batch's mean loss. When no
    rank failed, every ``p.grad`` ← ``Σ_r w_r·grad_r / Σ_r w_r`` with ``w_r`` the rank's number of targets (with a
    mean-reduced loss: the gradient of the global batch's mean loss); a tensor without a gradient on a rank counts
    as zero there and keeps ``grad=None`` only if it has none on every rank, as one process would.
    Without a process group: ``(problem, loss)``, gradients untouched."""
    if not active():
        return problem, loss
    ref = next((p for p in params if p.grad is not None), params[0])
    dev, n = ref.device, world_size()
    ok = problem is None
    grads = [
        p.grad.detach().reshape(-1).to(torch.float64) * weight if ok and p.grad is not None else torch.zeros(p.numel())
        for p in params
    ]
    flags = [0.0] * n
    flags[rank()] = 0.0 if ok else 1.0
    head = [float(weight), loss * weight if ok else 0.0] + flags + [float(ok and p.grad is not None) for p in params]
    flat = torch.cat([torch.tensor(head, dtype=torch.float64, device=dev)] + [g.to(dev, torch.float64) for g in grads])
    all_sum_(flat, where=where)
    bad = [r for r in range(n) if flat[2 + r] > 0]
    if bad:
        return problem or f"rank(s) {', '.join(map(str, bad))} had a non-finite loss or gradient", loss
    total, offset = flat[0], 2 + n + len(params)
    for i, p in enumerate(params):
        grad = (flat[offset : offset + p.numel()] / total).view_as(p).to(p.dtype)
        p.grad = grad if flat[2 + n + i] > 0 else None
        offset += p.numel()
    return None, float(flat[1] / total)


def broadcast_(tensors: Iterable[Tensor], *, src: int = 0, where: str) -> None:
    """Each tensor ← rank ``src``'s, in place (one broadcast of a flat buffer per dtype); no-op without a group."""
    if not active():
        return
    by_dtype: dict = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    with torch.no_grad():
        for group in by_dtype.values():
            flat = torch.cat([t.detach().reshape(-1) for t in group])
            _collective(dist.broadcast, flat, src, where=where)
            offset = 0
            for t in group:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()


@contextlib.contextmanager
def guard(where: str) -> Iterator[None]:
    """Around a distributed data step: when it raises on this rank an error the other ranks do not raise with it,
    leave ``"rank r: <error>"`` in the rendezvous store (key :data:`FAILED_KEY`), where the other ranks, waiting
    in a collective, find it and stop at once with :class:`RankFailure` rather than after the timeout. Without a
    process group: nothing. After a :class:`RankFailure`, start the job again (the key stays)."""
    try:
        yield
    except BaseException as exc:
        store = _store() if active() and not getattr(exc, "agreed", False) else None
        if store is not None and not isinstance(exc, RankFailure):
            with contextlib.suppress(Exception):
                store.set(FAILED_KEY, f"rank {rank()} raised {type(exc).__name__} in {where}: {exc}"[:2000])
        raise


def check_sharded(data: object, *, where: str) -> None:
    """Warn (on every rank) when a process group is active and ``data`` is a DataLoader without a
    DistributedSampler: each rank would then see the whole data set, not a shard, and the global batch would
    hold every sample ``world_size`` times (also through a wrapper's ``.loader``, e.g.
    :class:`fxsnn.io.loaders.OnDevice`). Lists and other iterables are taken as the rank's shard as given."""
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    if isinstance(getattr(data, "loader", None), DataLoader):  # a wrapper such as fxsnn.io.loaders.OnDevice
        data = data.loader
    if not active() or not isinstance(data, DataLoader):
        return
    samplers = (data.sampler, getattr(data.batch_sampler, "sampler", None))
    if not any(isinstance(s, DistributedSampler) for s in samplers):
        warnings.warn(
            f"{where}: a process group of {world_size()} ranks is active but the DataLoader has no "
            "DistributedSampler, so every rank reads the whole data set (each rank's loader is taken as its shard). "
            "Pass DataLoader(dataset, batch_size=..., sampler=torch.utils.data.distributed.DistributedSampler("
            "dataset, seed=...)) to give each rank its share",
            stacklevel=3,
        )
