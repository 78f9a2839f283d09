"""Patterns are data (DESIGN convention 2): modules matched by ``isinstance``, functions by identity."""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from .conventions import QCFSConvention, qcfs_reading, register_qcfs, unregister_qcfs

__all__ = [
    "register_qcfs",
    "unregister_qcfs",
    "QCFSConvention",
    "qcfs_reading",
    "relu_inplace",
    "relu_clip",
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


# -- clipped ReLUs: min(max(x, 0), a) with a constant a > 0 (a = inf: a ReLU spelled as a clamp) ------------
# function -> (inplace fixed or None: from the "inplace" argument, position of min, position of max, defaults)
_CLIP_FUNCTIONS = {
    F.relu6: (None, None, None, (0.0, 6.0)),
    F.hardtanh: (None, 1, 2, (-1.0, 1.0)),
    F.hardtanh_: (True, 1, 2, (-1.0, 1.0)),
    torch.clamp: (False, 1, 2, (None, None)),
    torch.clip: (False, 1, 2, (None, None)),
    torch.clamp_: (True, 1, 2, (None, None)),
    torch.clip_: (True, 1, 2, (None, None)),
    torch.clamp_min: (False, 1, None, (None, None)),
    torch.clamp_min_: (True, 1, None, (None, None)),
}
# Tensor method -> (inplace, position of min, position of max) counted after self
_CLIP_METHODS = {
    "clamp": (False, 0, 1),
    "clip": (False, 0, 1),
    "clamp_": (True, 0, 1),
    "clip_": (True, 0, 1),
    "clamp_min": (False, 0, None),
    "clamp_min_": (True, 0, None),
}
_HARDTANH_INPLACE_AT = 3  # F.hardtanh(input, min_val, max_val, inplace)
_RELU6_INPLACE_AT = 1


def _arg(node: fx.Node, pos: int | None, names: tuple[str, ...], default):
    for name in names:
        if name in node.kwargs:
            return node.kwargs[name]
    if pos is not None and len(node.args) > pos:
        return node.args[pos]
    return default


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _clip_of(lo, hi) -> float | None:
    """The clip ``a`` of ``clamp(x, lo, hi)`` when that is a clipped ReLU (``lo == 0 < hi``), else ``None``."""
    if not (_number(lo) and lo == 0):
        return None
    if hi is None:
        return math.inf
    return float(hi) if _number(hi) and hi > 0 else None


def _clipped(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[bool, float] | None:
    """``(inplace, a)`` for a clipped ReLU spelling (``a = inf`` for ``clamp(x, min=0)``), else ``None``."""
    if node.op == "call_module":
        m = modules.get(node.target)
        if type(m) in (nn.ReLU6, nn.Hardtanh):
            a = _clip_of(m.min_val, m.max_val)
            return (bool(m.inplace), a) if a is not None else None
        return None
    if node.op == "call_function" and node.target in _CLIP_FUNCTIONS:
        fixed, lo_at, hi_at, (lo, hi) = _CLIP_FUNCTIONS[node.target]
        a = _clip_of(_arg(node, lo_at, ("min_val", "min"), lo), _arg(node, hi_at, ("max_val", "max"), hi))
        if a is None:
            return None
        if fixed is None:
            at = _RELU6_INPLACE_AT if node.target is F.relu6 else _HARDTANH_INPLACE_AT
            fixed = bool(_arg(node, at, ("inplace",), False))
        return fixed, a
    if node.op == "call_method" and node.target in _CLIP_METHODS:
        inplace, lo_at, hi_at = _CLIP_METHODS[node.target]
        lo = _arg(node, lo_at + 1, ("min",), None)
        hi = _arg(node, None if hi_at is None else hi_at + 1, ("max",), None)
        a = _clip_of(lo, hi)
        return None if a is None else (inplace, a)
    return None


def relu_clip(node: fx.Node, modules: dict[str, nn.Module]) -> float | None:
    """The clip ``a`` of a clipped-ReLU site (``nn.ReLU6``, ``F.relu6``, ``nn.Hardtanh(0, a)``,
    ``F.hardtanh(x, 0, a)``, ``torch.clamp(x, 0, a)``, ``x.clamp(min=0, max=a)``); ``None`` for a plain ReLU
    (``torch.clamp(x, min=0)`` included) or a node that is no ReLU."""
    found = _clipped(node, modules)
    return None if found is None or math.isinf(found[1]) else found[1]


def relu_inplace(node: fx.Node, modules: dict[str, nn.Module]) -> bool | None:
    """``None`` if ``node`` is not a ReLU (plain or clipped, :func:`relu_clip`); else whether it is in place."""
    clipped = _clipped(node, modules)
    if clipped is not None:
        return clipped[0]
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


# kind -> (module types, functions, Tensor method names); looked up by exact module type along the MRO.
# Clipped ReLUs (ReLU6, Hardtanh(0, a), clamp(x, 0, a)) are sites and never reach this table (relu_clip).
_ANALOG: dict[str, tuple[tuple[type, ...], tuple, tuple[str, ...]]] = {
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
        if qcfs_reading(m) is not None:  # a QCFS activation of the user's code: a site (fxsnn.graph.conventions)
            return None
        return None if type(m).__module__.startswith(("torch.", "fxsnn.nn.")) else "opaque module"
    if node.op == "call_function":
        return _ANALOG_FUNCTIONS.get(node.target)
    if node.op == "call_method":
        return _ANALOG_METHODS.get(node.target)
    return None
