"""Small torch.fx helpers shared by every pass: copy in, finish out, name things, locate nodes."""

from __future__ import annotations

import copy
import operator

import torch
from torch import fx, nn

__all__ = [
    "require_graph_module",
    "copy_graph_module",
    "finish",
    "free_submodule_name",
    "node_scope",
    "describe_node",
    "is_inplace_node",
]


def require_graph_module(obj: object, *, where: str) -> fx.GraphModule:
    """``obj`` if it is a GraphModule; a traced copy if it is any other ``nn.Module``; else a TypeError."""
    if isinstance(obj, fx.GraphModule):
        return obj
    if isinstance(obj, nn.Module):
        from .tracing import trace

        return trace(obj)
    raise TypeError(
        f"{where} expects a torch.nn.Module (ideally the GraphModule returned by fxsnn.trace); got {type(obj).__name__}"
    )


def copy_graph_module(gm: fx.GraphModule) -> fx.GraphModule:
    """A deep copy: rewrites never touch their input (DESIGN convention 1)."""
    return copy.deepcopy(gm)


def is_inplace_node(node: fx.Node, modules: dict | None = None) -> bool:
    """True for nodes that mutate an argument: ``x.add_()``, ``F.relu(x, inplace=True)``, ``operator.iadd``, ..."""
    if node.kwargs.get("inplace") is True:
        return True
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.endswith("__")
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        if node.target in (operator.iadd, operator.isub, operator.imul, operator.itruediv):
            return True
        return name.endswith("_") and not name.endswith("__")
    if node.op == "call_module" and modules is not None:
        return bool(getattr(modules.get(node.target), "inplace", False))
    return False


def finish(gm: fx.GraphModule) -> fx.GraphModule:
    """The finishing sequence of torch.ao's FX passes, in one place.

    ``lint()`` → dead-code elimination (keeping in-place ops, whose effect is
    not their return value) → drop unused submodules → ``recompile()``.
    """
    modules = dict(gm.named_modules())
    gm.graph.lint()
    gm.graph.eliminate_dead_code(is_impure_node=lambda n: n.is_impure() or is_inplace_node(n, modules))
    gm.delete_all_unused_submodules()
    gm.recompile()
    gm.graph.lint()
    return gm


def free_submodule_name(gm: fx.GraphModule, parent: str, base: str) -> str:
    """The first free qualified name ``parent.base``, ``parent.base_1``, ... (deterministic)."""
    try:
        owner = gm.get_submodule(parent) if parent else gm
    except AttributeError:
        owner = None
    i = 0
    while True:
        name = base if i == 0 else f"{base}_{i}"
        if owner is None or not hasattr(owner, name):
            return f"{parent}.{name}" if parent else name
        i += 1


def node_scope(node: fx.Node) -> str:
    """Qualified path of the module whose ``forward`` issued this node ('' for the top level)."""
    if node.op == "call_module":
        return node.target.rpartition(".")[0]
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return path if isinstance(path, str) else ""


def describe_node(node: fx.Node) -> str:
    """Human-readable location of a node for error messages."""
    if node.op == "call_module":
        what = f"module '{node.target}'"
    else:
        target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
        scope = node_scope(node)
        what = f"{node.op} {target}" + (f" in module '{scope}'" if scope else " at the top level")
    return f"node '{node.name}' ({what})"


def rename_nodes(gm: fx.GraphModule, names: dict[fx.Node, str]) -> None:
    """Give nodes the names in ``names`` (where free) by rebuilding the graph.

    torch.fx never frees a node name, so a node that replaces an erased one
    gets a suffixed name (``relu_20``); a fresh copy of the graph lets the
    replacement read like its module (``layer1_0_relu``) instead.
    """
    taken = {n.name for n in gm.graph.nodes if n not in names}
    new_graph = fx.Graph(owning_module=gm, tracer_cls=gm.graph._tracer_cls)
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        want = names.get(node)
        if want is not None and want not in taken:
            node.name = want
            taken.add(want)
        env[node] = new_graph.node_copy(node, lambda a: env[a])
    new_graph._codegen = gm.graph._codegen
    gm.graph = new_graph


def set_submodule(gm: fx.GraphModule, qualname: str, module: nn.Module) -> None:
    """Replace (or create) the submodule at ``qualname`` without touching the graph."""
    parent, _, name = qualname.rpartition(".")
    owner = gm.get_submodule(parent) if parent else gm
    setattr(owner, name, module)


def first_tensor(model: nn.Module) -> torch.Tensor | None:
    """Any parameter or buffer of the model (for its device and dtype), or None."""
    for t in model.parameters():
        return t
    for t in model.buffers():
        if t.is_floating_point():
            return t
    return None
