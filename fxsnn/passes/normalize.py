"""``normalize``: every ReLU spelling becomes its own ``nn.ReLU`` call site."""

from __future__ import annotations

from torch import fx, nn

from ..errors import ConversionError
from ..graph.edit import describe_node, free_submodule_name, node_scope, rename_nodes
from ..graph.patterns import is_view, relu_clip, relu_inplace
from .base import STAGES, graph_pass

__all__ = ["normalize"]


def site_module(clip: float | None) -> nn.Module:
    """The module of a site: ``nn.ReLU()``, or for a clipped ReLU ``nn.ReLU6()`` (clip 6) / ``nn.Hardtanh(0, clip)``."""
    if clip is None:
        return nn.ReLU()
    return nn.ReLU6() if clip == 6 else nn.Hardtanh(0.0, clip)


@graph_pass("fxsnn.passes.normalize", ensures=STAGES[1:], decides=True)
def normalize(gm: fx.GraphModule) -> fx.GraphModule:
    """Give every ReLU its own out-of-place ``nn.ReLU`` call site.

    Handles ``nn.ReLU`` (``inplace=True`` too, and one instance called from
    several places), ``F.relu`` (either ``inplace``), ``torch.relu``,
    ``torch.relu_`` / ``F.relu_``, ``x.relu()`` and ``x.relu_()`` (the
    standardisation step of Brevitas). Clipped ReLUs ``min(max(x, 0), a)`` —
    ``nn.ReLU6``, ``F.relu6``, ``nn.Hardtanh(0, a)``, ``F.hardtanh(x, 0, a)``,
    ``torch.clamp(x, 0, a)``, ``x.clamp(min=0, max=a)`` (and in-place forms) —
    become ``nn.ReLU6`` / ``nn.Hardtanh(0, a)`` sites whose record keeps the
    clip ``a`` (:func:`fxsnn.graph.patterns.relu_clip`); ``torch.clamp(x, min=0)``
    is a plain ReLU. Each new module is placed under the
    module whose ``forward`` made the call (``layer1.0.relu``,
    ``layer1.0.relu_1``, ...), so names are deterministic and readable.

    In-place semantics are kept: where an in-place ReLU's input is read again
    later in the graph, those later reads are rewired to the ReLU's output
    (they saw the rectified tensor before). An in-place ReLU on a tensor that
    *aliases* another one read later (a view, a slice) cannot be expressed
    out of place; that raises :class:`fxsnn.ConversionError` naming the node.

    Outputs are bit-identical before and after; the pass is idempotent and
    returns a new GraphModule (the input is untouched) whose sites carry
    their ``node.meta["fxsnn.site"]`` records (:mod:`fxsnn.graph.sites`).

    Example::

        >>> gm = fxsnn.passes.normalize(fxsnn.trace(model))
        >>> print(fxsnn.find_sites(gm))
    """
    modules = dict(gm.named_modules())
    graph = gm.graph
    order = {n: i for i, n in enumerate(graph.nodes)}
    kept: set[str] = set()
    renamed: dict[fx.Node, str] = {}
    for node in list(graph.nodes):
        inplace = relu_inplace(node, modules)
        if inplace is None:
            continue
        x = node.args[0] if node.args else node.kwargs.get("input", node.kwargs.get("self"))
        if inplace and isinstance(x, fx.Node):
            _rewire_inplace_readers(node, x, order, modules)
        if node.op == "call_module" and node.target not in kept:
            # first call site keeps the module (now out of place)
            kept.add(node.target)
            modules[node.target].inplace = False
            continue
        clip = relu_clip(node, modules)
        if node.op == "call_module":
            parent, base = node.target.rpartition(".")[0], node.target.rpartition(".")[2]
        else:
            parent, base = node_scope(node), "relu" if clip is None else "relu6" if clip == 6 else "hardtanh"
        name = free_submodule_name(gm, parent, base)
        gm.add_submodule(name, site_module(clip))
        modules[name] = gm.get_submodule(name)
        with graph.inserting_before(node):
            new = graph.call_module(name, (x,))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        renamed[new] = name.replace(".", "_")  # the node reads like its module
        order[new] = order.pop(node)
    rename_nodes(gm, renamed)
    return gm


def _alias_group(x: fx.Node, modules, order: dict, before: int) -> set[fx.Node]:
    """Nodes computed before position ``before`` that may share storage with ``x`` via view-like ops."""
    group, todo = {x}, [x]
    while todo:
        n = todo.pop()
        nbrs = [u for u in n.users if is_view(u, modules) and u.args and u.args[0] is n and order.get(u, -1) < before]
        if is_view(n, modules) and n.args and isinstance(n.args[0], fx.Node):
            nbrs.append(n.args[0])
        for m in nbrs:
            if m not in group:
                group.add(m)
                todo.append(m)
    return group


def _rewire_inplace_readers(relu: fx.Node, x: fx.Node, order: dict, modules) -> None:
    """After ``relu_(x)``, later readers of ``x`` read the rectified tensor: point them at ``relu``."""
    here = order[relu]
    for alias in _alias_group(x, modules, order, here) - {x}:
        late = [u for u in alias.users if order.get(u, -1) > here]
        if late:
            raise ConversionError(
                f"{describe_node(relu)} is an in-place ReLU on a tensor that {describe_node(alias)} aliases, "
                f"and {describe_node(late[0])} reads that alias afterwards; fxsnn cannot express this out of "
                "place. Use an out-of-place ReLU there (F.relu(x) / nn.ReLU(inplace=False))."
            )
    for user in list(x.users):
        if user is not relu and order.get(user, -1) > here:
            user.replace_input_with(x, relu)
