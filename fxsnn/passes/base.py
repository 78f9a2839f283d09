"""The generic site rewrite every activation pass is built on."""

from __future__ import annotations

from collections.abc import Callable

from torch import fx, nn

from ..errors import ConversionError
from ..graph.edit import copy_graph_module, describe_node, finish, first_tensor, require_graph_module, set_submodule
from ..graph.sites import Site, find_sites

__all__ = ["swap_sites", "stage_error"]

Swap = Callable[[Site, nn.Module, fx.Node], nn.Module]


def swap_sites(gm: fx.GraphModule, swap: Swap, *, where: str) -> fx.GraphModule:
    """Copy ``gm`` and replace the module of every activation site by ``swap(site, module, node)``.

    Sites keep their qualified name through every stage (``layer1.0.relu`` is a
    ReLU, then a recorder, a QCFS, a ParallelIF), so reports can line stages
    up. The graph itself does not change: only the module at each call target.
    A graph with no activation site is an error.
    """
    gm = copy_graph_module(require_graph_module(gm, where=where))
    modules = dict(gm.named_modules())
    nodes = {n.name: n for n in gm.graph.nodes}
    sites = find_sites(gm)
    if not sites:
        raise ConversionError(
            f"{where}: the model has no ReLU activation site (nn.ReLU, F.relu, torch.relu, x.relu(), or their "
            "in-place forms); fxsnn converts ReLU networks. If the ReLUs sit inside a leaf module, trace without "
            "marking it as a leaf."
        )
    for site in sites:
        node = nodes[site.node]
        if node.op != "call_module":
            raise ConversionError(
                f"{where}: {describe_node(node)} is a functional ReLU; run fxsnn.passes.normalize(gm) first "
                "(insert_recorders does that for you)"
            )
        new = swap(site, modules[node.target], node)
        ref = first_tensor(gm)
        if ref is not None:  # follow the model's device and floating dtype
            new = new.to(device=ref.device, dtype=ref.dtype)
        set_submodule(gm, node.target, new)
    return finish(gm)


def stage_error(where: str, site: Site, module: nn.Module, fix: str) -> ConversionError:
    return ConversionError(f"{where}: site '{site.name}' is a {type(module).__name__}; {fix}")
