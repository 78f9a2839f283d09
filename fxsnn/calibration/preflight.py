"""What :func:`fxsnn.convert` checks before it touches the data, and how it seeds the whole conversion."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator

import torch
from torch import fx, nn

from ..config import STAGE1_METHODS, STAGE2_METHODS, ConvertConfig
from ..errors import ConversionError, ModeError
from ..graph.edit import describe_node
from ..graph.rate import rate_mode_blockers
from ..graph.sites import AnalogTable, annotate_sites_, check_analog_, find_sites, no_site_message
from ..graph.tracing import trace
from ..nn import ParallelIF
from ..passes.base import swap_sites_
from ..passes.normalize import normalize
from .finetune import check_trainable_dtype
from .stage1 import check_running_stats
from .stage2 import training_mode

__all__ = ["validate", "seeded"]


def validate(
    model: nn.Module,
    T: int,
    method: str,
    cfg: ConvertConfig,
    *,
    leaf_modules: Iterable = (),
    concrete_args: dict | None = None,
    allow_analog: bool = False,
) -> AnalogTable:
    """Everything that can be checked before any data is touched: BN statistics, the dtype for the stages, the
    ReLU sites and the analog ops (a hybrid is refused unless ``allow_analog``), and whether the network can run
    in ``output_mode="rate"`` and train in Stage 2's ``mode="rate"``. Returns the hybrid ops (kept analog)."""
    where = "fxsnn.convert"
    check_running_stats(model, where=where)
    if method in STAGE1_METHODS + STAGE2_METHODS:
        check_trainable_dtype(model, where=where)
    traced = annotate_sites_(_trace(model, leaf_modules, concrete_args))
    if not find_sites(traced):
        raise ConversionError(f"{where}: {no_site_message(traced)}")
    hybrid = check_analog_(traced, allow_analog=allow_analog, where=where)
    stage2_rate = method in STAGE2_METHODS and cfg.stage2.mode == "rate"
    if cfg.output_mode != "rate" and not stage2_rate:
        return hybrid
    skeleton = _skeleton(traced, T)
    blockers = rate_mode_blockers(skeleton)
    if cfg.output_mode == "rate" and blockers:
        node, why = blockers[0]
        raise ModeError(
            f"{where}: output_mode='rate' is impossible for this network: {describe_node(node)}: {why}. "
            "Use output_mode='spike' or 'auto'"
        )
    if stage2_rate:
        training_mode(skeleton, "rate")  # ModeError naming the node, before any data step
    return hybrid


def _trace(model: nn.Module, leaf_modules=(), concrete_args=None) -> fx.GraphModule:
    with warnings.catch_warnings():  # front_end traces again and says it then
        warnings.simplefilter("ignore")
        return trace(model, leaf_modules=leaf_modules, concrete_args=concrete_args)


def _skeleton(traced: fx.GraphModule, T: int) -> fx.GraphModule:
    """The structure of the lowered network, without data: every site (ReLU, or a QCFS-trained backbone's QCFS)
    a (never run) ParallelIF."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        skeleton = normalize(traced)  # the hybrid ops were checked (and marked when allowed) on ``traced``
    return swap_sites_(skeleton, lambda site, module, node: ParallelIF(torch.ones(1), T=T))


def _generators(data) -> list[torch.Generator]:
    """The distinct torch generators a DataLoader (its own, its sampler's, its batch sampler's sampler's) draws from."""
    found: dict[int, torch.Generator] = {}
    sampler = getattr(data, "sampler", None)
    inner = getattr(getattr(data, "batch_sampler", None), "sampler", None)
    for g in (getattr(data, "generator", None), getattr(sampler, "generator", None), getattr(inner, "generator", None)):
        if isinstance(g, torch.Generator):
            found[id(g)] = g
    return list(found.values())


@contextlib.contextmanager
def seeded(data: Iterable, seed: int) -> Iterator[None]:
    """torch's global generator and every generator of ``data`` seeded with ``seed``; all put back on exit."""
    gens = _generators(data)
    states = [g.get_state() for g in gens]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for g in gens:
            g.manual_seed(seed)
        try:
            yield
        finally:
            for g, state in zip(gens, states):
                g.set_state(state)
