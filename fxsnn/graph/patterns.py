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
    "CONVS",
    "CONV_TRANSPOSES",
    "WEIGHTED",
    "is_add",
    "VIEW_MODULES",
    "is_view",
    "MAX_POOL_MODULES",
    "is_max_pool",
    "analog_kind",
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
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
#: The weighted layers: site producers here, MAC-counted layers in :mod:`fxsnn.report.energy`.
WEIGHTED = CONVS + CONV_TRANSPOSES + (nn.Linear,)
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


# -- the other nonlinear ops: what fxsnn does not turn into spikes ----------------
MAX_POOL_MODULES = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
_MAX_POOL_FUNCTIONS = {
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
}


def is_max_pool(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """True for a max pooling: the `nn.MaxPool*` / `nn.AdaptiveMaxPool*` modules and their functional forms."""
    if node.op == "call_module":
        return isinstance(modules.get(node.target), MAX_POOL_MODULES)
    return node.op == "call_function" and node.target in _MAX_POOL_FUNCTIONS


# kind -> (module types, functions, Tensor method names); looked up by exact module type along the MRO,
# so ReLU6 is found before its base class Hardtanh
_ANALOG: dict[str, tuple[tuple[type, ...], tuple, tuple[str, ...]]] = {
    "ReLU6": ((nn.ReLU6,), (F.relu6,), ()),
    "Hardtanh": ((nn.Hardtanh,), (F.hardtanh, F.hardtanh_), ()),
    "GELU": ((nn.GELU,), (F.gelu,), ()),
    "SiLU": ((nn.SiLU,), (F.silu,), ()),
    "Mish": ((nn.Mish,), (F.mish,), ()),
    "Sigmoid": ((nn.Sigmoid,), (torch.sigmoid, torch.sigmoid_, F.sigmoid), ("sigmoid", "sigmoid_")),
    "Hardsigmoid": ((nn.Hardsigmoid,), (F.hardsigmoid,), ()),
    "Hardswish": ((nn.Hardswish,), (F.hardswish,), ()),
    "Tanh": ((nn.Tanh,), (torch.tanh, torch.tanh_, F.tanh), ("tanh", "tanh_")),
    "ELU": ((nn.ELU, nn.CELU, nn.SELU), (F.elu, F.elu_, F.celu, F.selu, torch.selu), ()),
    "LeakyReLU": ((nn.LeakyReLU, nn.PReLU, nn.RReLU), (F.leaky_relu, F.leaky_relu_, F.prelu, F.rrelu), ()),
    "Softplus": ((nn.Softplus, nn.Softsign, nn.LogSigmoid), (F.softplus, F.softsign, F.logsigmoid), ()),
    "Softmax": (
        (nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d),
        (F.softmax, F.softmin, F.log_softmax, torch.softmax, torch.log_softmax),
        ("softmax", "log_softmax"),
    ),
    "GLU": ((nn.GLU,), (F.glu,), ()),
    "Threshold": ((nn.Threshold, nn.Hardshrink, nn.Softshrink, nn.Tanhshrink), (F.threshold,), ()),
    "clamp": ((), (torch.clamp, torch.clip, torch.clamp_min, torch.clamp_max), ("clamp", "clamp_", "clip", "clip_")),
    "MaxPool": (MAX_POOL_MODULES + (nn.FractionalMaxPool2d, nn.LPPool1d, nn.LPPool2d), tuple(_MAX_POOL_FUNCTIONS), ()),
    "LayerNorm": (
        (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm),
        (F.layer_norm, F.group_norm, F.instance_norm),
        (),
    ),
    "attention": (
        (nn.MultiheadAttention, nn.Transformer, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer),
        (),
        (),
    ),
    "recurrent": ((nn.RNNBase, nn.RNNCellBase), (), ()),
    "elementwise": (
        (),
        (torch.exp, torch.log, torch.sqrt, torch.rsqrt, torch.pow, torch.abs, torch.erf),
        ("exp", "log", "sqrt", "rsqrt", "pow", "abs", "erf"),
    ),
}
_ANALOG_MODULES = {t: kind for kind, (types, _, _) in _ANALOG.items() for t in types}
_ANALOG_FUNCTIONS = {f: kind for kind, (_, fns, _) in _ANALOG.items() for f in fns}
_ANALOG_METHODS = {m: kind for kind, (_, _, names) in _ANALOG.items() for m in names}


def analog_kind(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """The kind of a nonlinear op that is not a ReLU site (``"GELU"``, ``"MaxPool"``, ...), else ``None``.

    A ``call_module`` of a user-defined class (a leaf module kept opaque at
    tracing) is ``"opaque module"``: whatever it computes stays analog.
    """
    if node.op == "call_module":
        m = modules.get(node.target)
        if m is None:
            return None
        for t in type(m).__mro__:
            if t in _ANALOG_MODULES:
                return _ANALOG_MODULES[t]
        return None if type(m).__module__.startswith(("torch.", "fxsnn.nn.")) else "opaque module"
    if node.op == "call_function":
        return _ANALOG_FUNCTIONS.get(node.target)
    if node.op == "call_method":
        return _ANALOG_METHODS.get(node.target)
    return None
