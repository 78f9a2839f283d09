"""Rate-mode analysis: which ops between neurons commute with the time-mean (DESIGN convention 7)."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..nn import ParallelIF, TimeMean
from .patterns import _VIEW_METHODS, is_max_pool

__all__ = ["rate_mode_blockers", "rate_commutes", "returns_metadata", "is_max_pool", "is_channel_cat"]

# -- values that are not tensors: shapes, sizes, ranks, dtypes (and the integer/bool arithmetic on them) -------
_METADATA_METHODS = {
    "size",
    "dim",
    "ndimension",
    "numel",
    "nelement",
    "stride",
    "element_size",
    "is_contiguous",
    "is_floating_point",
    "is_complex",
    "get_device",
    "storage_offset",
}
_METADATA_ATTRIBUTES = {"shape", "ndim", "dtype", "device", "layout", "is_cuda", "is_sparse", "is_quantized"}
_METADATA_FUNCTIONS = {len, torch.numel, torch.is_tensor, torch.is_floating_point, isinstance}
# value types that only describe layouts (a float could be x.sum().item(), and a tuple a torch.split of tensors)
_METADATA_TYPES = (bool, int, type(None), torch.Size, torch.dtype, torch.device, torch.layout)
_DATA_METHODS = {"item", "tolist"}  # numbers read out of a tensor's values


def returns_metadata(node: fx.Node) -> bool:
    """True when ``node``'s value is not a tensor: a size, shape, rank, dtype, ... of its input.

    Such a value describes a tensor's layout, not its contents, so it does not vary over time (integer and
    bool arithmetic and asserts on it, ``floordiv``, ``eq``, ``torch._assert``, only read it). Decided from
    the value's type when :class:`torch.fx.passes.shape_prop.ShapeProp` (or anything that writes
    ``node.meta["type"]``) has run, else statically from the op.
    """
    seen = node.meta.get("type")
    if isinstance(seen, type) and issubclass(seen, _METADATA_TYPES) and node.target not in _DATA_METHODS:
        return True
    if node.op == "call_method":
        return node.target in _METADATA_METHODS
    if node.op == "call_function":
        if node.target is getattr:
            return len(node.args) > 1 and node.args[1] in _METADATA_ATTRIBUTES
        return node.target in _METADATA_FUNCTIONS
    return False


# -- rate mode: which ops commute with the time-mean --------------------------
_AFFINE_MODULES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.ZeroPad1d,
    nn.ZeroPad2d,
    nn.ZeroPad3d,
    nn.ConstantPad1d,
    nn.ConstantPad2d,
    nn.ConstantPad3d,
    nn.ReflectionPad1d,
    nn.ReflectionPad2d,
    nn.ReplicationPad1d,
    nn.ReplicationPad2d,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.ChannelShuffle,
    nn.Upsample,  # every mode is a fixed linear map of the input (rate_commutes)
)
# linear in every tensor argument (sums, concatenations, layouts, linear layers)
_LINEAR_FUNCTIONS = {
    operator.add,
    operator.iadd,
    operator.sub,
    operator.isub,
    operator.neg,
    operator.pos,
    operator.getitem,
    torch.add,
    torch.sub,
    torch.cat,
    torch.concat,
    torch.stack,
    torch.flatten,
    torch.reshape,
    torch.permute,
    torch.transpose,
    torch.squeeze,
    torch.unsqueeze,
    torch.chunk,
    torch.split,
    torch.narrow,
    torch.mean,
    torch.sum,
    torch.neg,
    F.pad,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    F.conv1d,
    F.conv2d,
    F.conv3d,
    F.linear,
    F.dropout,
    F.batch_norm,
    F.pixel_shuffle,
    F.pixel_unshuffle,
    F.channel_shuffle,
    F.interpolate,
    F.upsample,
    F.upsample_nearest,
    F.upsample_bilinear,
    getattr,
}
_LINEAR_METHODS = _VIEW_METHODS | {
    "add",
    "add_",
    "sub",
    "sub_",
    "mean",
    "sum",
    "neg",
    "size",
    "dim",
    "clone",
    "to",
    "float",
    "double",
    "half",
    "type_as",
    "repeat",
    "__getitem__",
}
# linear in one argument when the other is not time-varying
_SCALING_FUNCTIONS = {operator.mul, operator.imul, operator.truediv, operator.itruediv, torch.mul, torch.div}
_SCALING_METHODS = {"mul", "mul_", "div", "div_"}


def rate_commutes(node: fx.Node, modules: dict[str, nn.Module], temporal: set[fx.Node]) -> bool:
    """True when ``mean_t(op(x_t)) == op(mean_t(x_t))`` for this node (it is affine in its time-varying inputs).

    ``temporal`` holds the nodes that vary over time. A product or quotient is
    affine when at most one factor varies (and, for a quotient, not the divisor).
    Resampling (``nn.Upsample``, ``F.interpolate`` in every mode: nearest,
    linear, bilinear, bicubic, trilinear, area, antialiased or not) computes
    each output as a sum of inputs with weights fixed by the shapes alone, so it
    is linear in the input per sample and commutes with the time-mean.
    """
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _AFFINE_MODULES)
    varying: list[fx.Node] = []  # every time-varying argument, repeats included (x * x has two factors)
    fx.node.map_arg((node.args, node.kwargs), lambda a: varying.append(a) if a in temporal else None)
    if node.op == "call_function":
        if node.target in _LINEAR_FUNCTIONS:
            return True
        if node.target in _SCALING_FUNCTIONS:
            return len(varying) <= 1 and not (
                node.target in (operator.truediv, operator.itruediv, torch.div)
                and len(node.args) > 1
                and node.args[1] in temporal
            )
        return False
    if node.op == "call_method":
        if node.target in _LINEAR_METHODS:
            return True
        if node.target in _SCALING_METHODS:
            return len(varying) <= 1 and not (
                node.target.startswith("div") and len(node.args) > 1 and node.args[1] in temporal
            )
        return False
    return True  # placeholder / get_attr / output


def rate_mode_blockers(gm: fx.GraphModule) -> list[tuple[fx.Node, str]]:
    """Nodes between neurons that do not commute with the time-mean, with the reason.

    A node is *temporal* when it depends on a neuron's output. Rate mode is
    exact for every temporal node that is affine in its temporal inputs
    (conv, linear, BN in eval, average pooling, sums, concat, padding, views).
    MaxPool is allowed directly on a neuron's output: a channel's spike trains
    all fill the last ``k`` slots (Eq. 8) and share ``θ_post``, so the maximum
    of the trains is the train of the maximum count, and pooling commutes with
    the time-mean exactly; the same holds for a channel-wise concatenation of
    neuron outputs and for MaxPool of such a pooled train. Anywhere else
    MaxPool is a blocker. Shapes, sizes and ranks of time-varying tensors
    (:func:`returns_metadata`), and whatever is computed from them alone, do
    not vary over time (channel shuffle's ``x.size()`` and ``floordiv``).
    """
    modules = dict(gm.named_modules())
    temporal: set[fx.Node] = set()
    sorted_trains: set[fx.Node] = set()  # per channel: suffix spike trains sharing θ_post
    blockers = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), ParallelIF):
            temporal.add(node)
            sorted_trains.add(node)
            continue
        if node.op == "output" or not any(a in temporal for a in node.all_input_nodes):
            continue
        if returns_metadata(node):
            continue  # a size / shape / rank of a time-varying tensor is not itself time-varying
        if node.op == "call_module" and isinstance(modules.get(node.target), TimeMean):
            continue
        temporal.add(node)
        if is_max_pool(node, modules):
            if node.args and node.args[0] in sorted_trains:
                sorted_trains.add(node)  # the max of nested suffix trains is a suffix train
            else:
                blockers.append(
                    (
                        node,
                        "max pooling commutes with the time-mean only on neurons' outputs "
                        "(directly, or concatenated along channels)",
                    )
                )
        elif is_channel_cat(node) and all(a in sorted_trains for a in node.all_input_nodes):
            sorted_trains.add(node)
        elif not rate_commutes(node, modules, temporal):
            blockers.append(
                (node, "this op is not affine in its time-varying input, so it does not commute with the time-mean")
            )
    return blockers


def is_channel_cat(node: fx.Node) -> bool:
    """``torch.cat`` / ``torch.concat`` along dim 1 (channels)."""
    if node.op != "call_function" or node.target not in (torch.cat, torch.concat):
        return False
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    return dim == 1
