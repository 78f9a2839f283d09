"""Functional ``batch_norm`` calls of BatchNorm subclasses become ``nn.BatchNorm*d`` modules of the traced copy.

A BatchNorm subclass whose ``forward`` calls ``F.batch_norm`` itself (timm's ``BatchNormAct2d``: BN, then
dropout and its activation) is traced *through*: the graph holds a ``call_function`` of
``torch.nn.functional.batch_norm`` on ``get_attr`` nodes of the module's running statistics and affine
parameters, and no BatchNorm module, so neither the site patterns nor Stage 1 would see it. As Brevitas
standardises functionals into modules, :func:`batch_norm_modules_` puts an ``nn.BatchNorm1d/2d/3d`` at the
owner's path that holds the **same** tensors (the traced copy's: the user's model is never touched) and
calls it instead; the subclass's other children (``drop``, ``act``) stay under it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import fx, nn

from .edit import rename_nodes

__all__ = ["batch_norm_modules_"]

_BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
_BN_DEFAULTS = {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5}
_BN_CLASSES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _call_args(node: fx.Node) -> dict:
    """The arguments of an ``F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum,
    eps)`` node by name."""
    out = dict(_BN_DEFAULTS)
    out.update(zip(_BN_ARGS, node.args))
    out.update(node.kwargs)
    return out


def _attr(value: object, owner: str, name: str) -> bool | None:
    """``True`` if ``value`` is a ``get_attr`` of ``owner.name``, ``None`` if it is ``None``, else ``False``."""
    if value is None:
        return None
    return isinstance(value, fx.Node) and value.op == "get_attr" and value.target == f"{owner}.{name}"


def _owner(node: fx.Node, root: nn.Module) -> tuple[str, nn.modules.batchnorm._BatchNorm] | None:
    """``(path, module)`` of the BatchNorm whose tensors this ``F.batch_norm`` call reads, when the call computes
    exactly what ``nn.BatchNorm*d.forward`` computes for it in its current mode; else ``None``."""
    a = _call_args(node)
    stats = a["running_mean"]
    if not (isinstance(stats, fx.Node) and stats.op == "get_attr" and stats.target.endswith(".running_mean")):
        return None
    path = stats.target.rpartition(".")[0]
    try:
        owner = root.get_submodule(path)
    except AttributeError:
        return None
    if not isinstance(owner, _BN_CLASSES) or not owner.track_running_stats:
        return None
    affine = (_attr(a["weight"], path, "weight"), _attr(a["bias"], path, "bias"))
    if affine not in ((True, True), (None, None)) or (affine[0] is True) != owner.affine:
        return None
    if not _attr(a["running_var"], path, "running_var"):
        return None
    if not isinstance(a["training"], bool) or a["training"] != owner.training or not isinstance(a["eps"], float):
        return None
    return path, owner


def _module(gm: fx.GraphModule, path: str, owner: nn.modules.batchnorm._BatchNorm, eps: float) -> nn.Module:
    """An ``nn.BatchNorm*d`` holding the traced copy's tensors at ``path`` (and the children the graph calls)."""
    cls = next(c for c in _BN_CLASSES if isinstance(owner, c))
    bn = cls(owner.num_features, eps=eps, momentum=owner.momentum, affine=owner.affine, device="meta")
    held = gm.get_submodule(path)  # a plain Module that torch.fx filled with what the graph reads
    for name, p in held._parameters.items():
        bn._parameters[name] = p
    for name, b in held._buffers.items():
        bn._buffers[name] = b
    if "num_batches_tracked" not in held._buffers:
        bn._buffers["num_batches_tracked"] = owner.num_batches_tracked
    for name, child in held.named_children():
        bn.add_module(name, child)
    return bn.train(owner.training)


def batch_norm_modules_(gm: fx.GraphModule, root: nn.Module) -> list[str]:
    """Replace each ``F.batch_norm`` call on a BatchNorm module's own tensors by a call of that BN as a module.

    **In place** on ``gm`` (the trace of ``root``, fxsnn's deep copy of the user's model); returns the module
    paths standardised. A call qualifies when its ``running_mean`` / ``running_var`` (and ``weight`` /
    ``bias``, or neither) are ``get_attr`` nodes of one ``nn.BatchNorm1d/2d/3d`` (a subclass, e.g. timm's
    ``BatchNormAct2d``) with running statistics, and its ``training`` flag equals the module's mode, so that
    the call is exactly ``nn.BatchNorm*d.forward`` of that module: ``y = (x − μ) / sqrt(σ² + eps) · γ + β``
    per channel (dim 1) in eval, batch statistics in training. The new module (of the subclass's base BN
    class, with the call's ``eps`` and the module's ``momentum``) shares the traced copy's parameter and
    buffer tensors, so outputs are bit-identical; the subclass's children stay under its path.
    """
    found = [(n, _owner(n, root)) for n in gm.graph.nodes if n.op == "call_function" and n.target is F.batch_norm]
    done: dict[str, nn.Module] = {}
    renamed: dict[fx.Node, str] = {}
    for node, hit in found:
        if hit is None:
            continue
        path, owner = hit
        if path not in done:
            done[path] = _module(gm, path, owner, _call_args(node)["eps"])
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(path, (_call_args(node)["input"],))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        reads = [a for a in node.all_input_nodes if a.op == "get_attr"]
        gm.graph.erase_node(node)
        for a in reads:  # the tensors are the module's now
            if not a.users:
                gm.graph.erase_node(a)
        renamed[new] = path.replace(".", "_")
    if not done:
        return []
    for path, bn in done.items():
        parent, _, name = path.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, name, bn)
    rename_nodes(gm, renamed)
    gm.recompile()
    return list(done)
