"""``lower_to_paraif``: QCFS / DA-QCFS sites become parallel IF neurons; the graph gets a time axis."""

from __future__ import annotations

import warnings

from torch import fx

from ..graph.edit import first_tensor, free_submodule_name
from ..modes import set_mode
from ..nn import DAQCFS, ParallelIF, TimeExpand, TimeMean
from ..validation import check_mode, check_positive_int
from .base import graph_pass, swap_sites_
from .qcfs import as_fxsnn_qcfs

__all__ = ["lower_to_paraif"]


@graph_pass("fxsnn.passes.lower_to_paraif", requires=("qcfs", "da-qcfs"), ensures=("paraif",), analog=True)
def lower_to_paraif(gm: fx.GraphModule, *, T: int, mode: str = "spike", surrogate_width: float = 0.5) -> fx.GraphModule:
    """Lower every QCFS / DA-QCFS site to a :class:`fxsnn.nn.ParallelIF` (Alg. 1, stage III).

    Per site (fxsnn's QCFS / DA-QCFS, or a QCFS activation of the user's code read by
    :func:`fxsnn.passes.qcfs.as_fxsnn_qcfs`): ``θ_pre = θ``, ``θ_post = θ + φ_DA``, ``ψ = θ/2``, ``ψ_DA`` copied,
    ``Λ_PC`` and ``b(t)`` built once for ``T`` (Eq. 6-7, 16; Alg. 1 l. 20-25),
    ``Δb = 0`` (Eq. 17). Recorders are refused with :class:`fxsnn.ConversionError`:
    quantise them first with ``fxsnn.passes.to_qcfs(gm, levels=T)`` (plain FS-PC)
    or ``to_da_qcfs``. The result keeps the ANN's call signature: ``[B, ...]`` in,
    time-averaged ``[B, ...]`` out — a :class:`~fxsnn.nn.TimeExpand` follows each
    input and a :class:`~fxsnn.nn.TimeMean` precedes the output. The lowered network
    reproduces the QCFS network only where its ``levels`` equal ``T``; a site quantised
    with other levels is lowered anyway (running a QCFS network at another T is a
    legitimate experiment) with a ``UserWarning`` naming both numbers.

    ``mode="spike"`` runs a real ``[T·B, ...]`` spike train between layers;
    ``mode="rate"`` carries the time-mean only (1/T of the cost, refused with
    :class:`fxsnn.ModeError` where an op between neurons does not commute with
    the time-mean). Switch later with :func:`fxsnn.set_mode`.

    The result is in eval mode: a converted network is for inference (BN
    uses its running statistics; Stage 2 keeps it that way while it trains Δb).

    Example::

        >>> snn = fxsnn.passes.lower_to_paraif(qcfs_gm, T=4, mode="rate")
        >>> snn(images).shape  # same as the ANN's logits
    """
    where = lower_to_paraif.contract.name
    T = check_positive_int(T, "T", where=where)
    mode = check_mode(mode, where=where)

    mismatched: dict[int, list[str]] = {}

    def swap(site, module, node):
        module = as_fxsnn_qcfs(site, module)  # the user's own QCFS activation: θ and L read from it
        if module.levels != T:
            mismatched.setdefault(int(module.levels), []).append(str(node.target))
        theta = module.theta.detach()
        if isinstance(module, DAQCFS):
            return ParallelIF(
                theta,
                T=T,
                theta_post=theta + module.phi_da,
                psi_da=module.psi_da,
                mode=mode,
                surrogate_width=surrogate_width,
            )
        return ParallelIF(theta, T=T, mode=mode, surrogate_width=surrogate_width)

    gm = swap_sites_(gm, swap)
    _warn_levels(mismatched, T, where)
    _add_time_boundaries(gm, T, mode)
    set_mode(gm, mode)
    return gm.eval()


def _warn_levels(mismatched: dict[int, list[str]], T: int, where: str) -> None:
    """Warn when sites were quantised with ``levels != T``: the lowered network then differs from the QCFS one."""
    for levels, names in sorted(mismatched.items()):
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        warnings.warn(
            f"{where}: {len(names)} site(s) ({shown}) were quantised with levels={levels} but are lowered with "
            f"T={T}; the spike counts then differ from the QCFS network's. Lower with T={levels} (or quantise with "
            f"levels={T}) for a network that reproduces it exactly",
            stacklevel=3,
        )


def _add_time_boundaries(gm: fx.GraphModule, T: int, mode: str) -> None:
    """A checking ``TimeExpand`` after each input, a ``TimeMean`` before the output; direct encoding between.

    Direct encoding: the nodes that depend on an input but on no neuron are
    constant over time and run once per image (``[B, ...]``); a neuron fed by
    one takes that current as its exact time-mean (``ParallelIF.direct``), and
    a repeating ``TimeExpand`` sits wherever else such a tensor meets the
    time-varying part (or the output). Where a non-tensor value (a size) of
    that part would reach the time-varying ops, the input is repeated at once
    as before.
    """
    graph = gm.graph
    ref = first_tensor(gm)
    kw = dict(dtype=ref.dtype if ref is not None else None)
    device = ref.device if ref is not None else "cpu"
    plan = _direct_encoding_plan(gm)

    def expand(node: fx.Node, users, **extra) -> None:
        name = free_submodule_name(gm, "", "time_expand")
        gm.add_submodule(name, TimeExpand(T, mode, **kw, **extra).to(device))
        with graph.inserting_after(node):
            expanded = graph.call_module(name, (node,))
        for user in users:
            user.replace_input_with(node, expanded)

    if plan is not None:  # first, so that an input's checking TimeExpand precedes a repeat of it
        direct, boundary = plan
        for target in direct:
            gm.get_submodule(target).direct = True
        for node, users in boundary.items():
            expand(node, users, check=False)
    for node in [n for n in graph.nodes if n.op == "placeholder"]:
        expand(node, list(node.users), repeat=plan is None)
    output = next(n for n in graph.nodes if n.op == "output")

    def collapse(value: fx.Node) -> fx.Node:
        name = free_submodule_name(gm, "", "time_mean")
        gm.add_submodule(name, TimeMean(T, mode))
        with graph.inserting_before(output):
            return graph.call_module(name, (value,))

    output.args = fx.node.map_arg(output.args, collapse)


_META_METHODS = {"size", "dim", "numel", "nelement", "stride", "element_size", "tolist", "item", "__len__"}


def _is_meta(node: fx.Node, meta: set[fx.Node]) -> bool:
    """A node whose value is (or may be) a non-tensor read off a tensor: a size, a dim, a shape entry."""
    if node.op == "call_method" and node.target in _META_METHODS:
        return True
    if node.op == "call_function" and node.target in (getattr, len):
        return True
    return node.op == "call_function" and any(a in meta for a in node.all_input_nodes)


def _direct_encoding_plan(gm: fx.GraphModule):
    """``(direct neuron targets, {time-constant node: its time-varying users})``, or ``None`` (no direct encoding)."""
    modules = dict(gm.named_modules())
    constant: set[fx.Node] = set()  # depends on an input, on no neuron: one value for all T steps
    varying: set[fx.Node] = set()
    meta: set[fx.Node] = set()
    direct, other = set(), set()
    for node in gm.graph.nodes:
        ins = node.all_input_nodes
        if node.op == "call_module" and isinstance(modules.get(node.target), ParallelIF):
            varying.add(node)
            (direct if ins and ins[0] in constant else other).add(node.target)
        elif node.op == "placeholder" or (node.op != "output" and any(a in constant for a in ins)):
            if any(a in varying for a in ins):
                varying.add(node)
            else:
                constant.add(node)
                if _is_meta(node, meta):
                    meta.add(node)
        elif any(a in varying for a in ins):
            varying.add(node)
    boundary = {}
    for node in [n for n in gm.graph.nodes if n in constant]:  # graph order: deterministic names
        users = [u for u in node.users if u in varying or u.op == "output"]
        users = [u for u in users if not (u.op == "call_module" and u.target in direct and u.args[0] is node)]
        if users:
            boundary[node] = users
    if (direct & other) or any(n in meta for n in boundary) or not constant:
        return None
    return direct, boundary
