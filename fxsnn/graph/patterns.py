"""Patterns are data (DESIGN convention 2): modules matched by ``isinstance``, functions by identity."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = [
    "relu_inplace",
    "is_relu",
    "BATCHNORMS",
    "WEIGHTED",
    "is_add",
    "VIEW_MODULES",
    "is_view",
]

# -- ReLU spellings ------------------------------------------------------------
# F.relu (inplace kwarg/positional), torch.relu, torch.relu_ (is F.relu_), x.relu(), x.relu_(), nn.ReLU
_RELU_FUNCTIONS = {F.relu: None, torch.relu: False, torch.relu_: True, F.relu_: True}
_RELU_METHODS = {"relu": False, "relu_": True}


def relu_inplace(node: fx.Node, modules: dict[str, nn.Module]) -> bool | None:
    """``None`` if ``node`` is not a ReLU; else whether it is an in-place spelling."""
    if node.op == "call_module":
        m = modules.get(node.target)
        return bool(m.inplace) if type(m) is nn.ReLU else None
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        fixed = _RELU_FUNCTIONS[node.target]
        if fixed is not None:
            return fixed
        if "inplace" in node.kwargs:
            return bool(node.kwargs["inplace"])
        return bool(node.args[1]) if len(node.args) > 1 else False
    if node.op == "call_method" and node.target in _RELU_METHODS:
        return _RELU_METHODS[node.target]
    return None


def is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return relu_inplace(node, modules) is not None


# -- producers -------------------------------------------------------------------
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}


def is_add(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in ("add", "add_")
    )


# -- aliasing (for in-place ReLU semantics) -----------------------------------
VIEW_MODULES = (nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_VIEW_METHODS = {
    "view",
    "view_as",
    "reshape",
    "reshape_as",
    "flatten",
    "unflatten",
    "transpose",
    "permute",
    "squeeze",
    "unsqueeze",
    "narrow",
    "select",
    "expand",
    "expand_as",
    "t",
    "chunk",
    "split",
    "unbind",
    "as_strided",
    "diagonal",
    "detach",
    "contiguous",
    "movedim",
    "swapaxes",
}
_VIEW_FUNCTIONS = {
    operator.getitem,
    torch.flatten,
    torch.reshape,
    torch.transpose,
    torch.permute,
    torch.squeeze,
    torch.unsqueeze,
    torch.narrow,
    torch.select,
    torch.chunk,
    torch.split,
    torch.unbind,
    torch.movedim,
    torch.detach,
    F.dropout,
}


def is_view(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """True when the node's output may alias (share storage with) its first input."""
    if node.op == "call_module":
        return isinstance(modules.get(node.target), VIEW_MODULES)
    if node.op == "call_method":
        return node.target in _VIEW_METHODS
    if node.op == "call_function":
        return node.target in _VIEW_FUNCTIONS
    return False
