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
    "rate_commutes",
    "is_max_pool",
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
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "transpose", "permute", "squeeze",
    "unsqueeze", "narrow", "select", "expand", "expand_as", "t", "chunk", "split", "unbind", "as_strided",
    "diagonal", "detach", "contiguous", "movedim", "swapaxes",
}
_VIEW_FUNCTIONS = {
    operator.getitem, torch.flatten, torch.reshape, torch.transpose, torch.permute, torch.squeeze, torch.unsqueeze,
    torch.narrow, torch.select, torch.chunk, torch.split, torch.unbind, torch.movedim, torch.detach, F.dropout,
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


# -- rate mode: which ops commute with the time-mean --------------------------
_AFFINE_MODULES = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten, nn.Unflatten, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d,
    nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle,
)
_MAX_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_MAX_POOL_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d}
# linear in every tensor argument (sums, concatenations, layouts, linear layers)
_LINEAR_FUNCTIONS = {
    operator.add, operator.iadd, operator.sub, operator.isub, operator.neg, operator.pos, operator.getitem,
    torch.add, torch.sub, torch.cat, torch.concat, torch.stack, torch.flatten, torch.reshape, torch.permute,
    torch.transpose, torch.squeeze, torch.unsqueeze, torch.chunk, torch.split, torch.narrow, torch.mean,
    torch.sum, torch.neg, F.pad, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.conv1d, F.conv2d, F.conv3d, F.linear, F.dropout,
    F.batch_norm, F.pixel_shuffle, getattr,
}
_LINEAR_METHODS = _VIEW_METHODS | {"add", "add_", "sub", "sub_", "mean", "sum", "neg", "size", "dim", "clone", "to",
                                   "float", "double", "half", "type_as", "repeat", "__getitem__"}
# linear in one argument when the other is not time-varying
_SCALING_FUNCTIONS = {operator.mul, operator.imul, operator.truediv, operator.itruediv, torch.mul, torch.div}
_SCALING_METHODS = {"mul", "mul_", "div", "div_"}


def is_max_pool(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _MAX_POOL_MODULES)
    return node.op == "call_function" and node.target in _MAX_POOL_FUNCTIONS


def rate_commutes(node: fx.Node, modules: dict[str, nn.Module], temporal: set[fx.Node]) -> bool:
    """True when ``mean_t(op(x_t)) == op(mean_t(x_t))`` for this node (it is affine in its time-varying inputs).

    ``temporal`` holds the nodes that vary over time. A product or quotient is
    affine when at most one factor varies (and, for a quotient, not the divisor).
    """
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _AFFINE_MODULES)
    varying = [a for a in node.all_input_nodes if a in temporal]
    if node.op == "call_function":
        if node.target in _LINEAR_FUNCTIONS:
            return True
        if node.target in _SCALING_FUNCTIONS:
            return len(varying) <= 1 and not (node.target in (operator.truediv, operator.itruediv, torch.div)
                                               and len(node.args) > 1 and node.args[1] in temporal)
        return False
    if node.op == "call_method":
        if node.target in _LINEAR_METHODS:
            return True
        if node.target in _SCALING_METHODS:
            return len(varying) <= 1 and not (node.target.startswith("div") and len(node.args) > 1 and node.args[1] in temporal)
        return False
    return True  # placeholder / get_attr / output
