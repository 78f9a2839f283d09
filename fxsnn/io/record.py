"""The conversion record of a ``.fxsnn`` file: what :func:`fxsnn.save` writes as JSON, read back as data only.

The record says how to rebuild the network from the ANN the user passes: the
structural passes (with their arguments), every site (name, kind, pattern,
channels), every analog op (kind, node, module path) and whether they make the
network a hybrid, the graph's node list, the non-tensor attributes of every module
fxsnn inserted, train/eval flags, frozen parameters, and ``meta`` as JSON data.
"""

from __future__ import annotations

import dataclasses
import enum
import warnings

import torch
from torch import fx, nn

from ..errors import FxsnnError
from ..nn import DAQCFS, QCFS, ActivationRecorder, ParallelIF, TimeExpand, TimeMean

__all__ = ["build_record", "node_list", "module_attrs", "jsonable", "MODULE_TYPES"]

MODULE_TYPES = {c.__name__: c for c in (ActivationRecorder, QCFS, DAQCFS, ParallelIF, TimeExpand, TimeMean)}


def node_list(gm: fx.GraphModule) -> list[list[str]]:
    """``[[op, name, target], ...]``: the graph's structure as strings (compared after a rebuild, never executed)."""
    out = []
    for n in gm.graph.nodes:
        target = n.target if isinstance(n.target, str) else fx.node._get_qualified_name(n.target)
        out.append([n.op, n.name, target])
    return out


def leaf_modules(gm: fx.GraphModule) -> list[str]:
    """Called modules torch.fx would have traced through (not torch.nn's, not fxsnn's): traced as leaves."""
    modules = dict(gm.named_modules())
    out = set()
    for n in gm.graph.nodes:
        m = modules.get(n.target) if n.op == "call_module" else None
        if m is not None and not type(m).__module__.startswith(("torch.nn", "fxsnn.nn")):
            out.add(n.target)
    return sorted(out)


def module_attrs(m: nn.Module) -> dict:
    """The non-tensor attributes of a module fxsnn inserts (everything else lives in the state dict)."""
    if isinstance(m, ActivationRecorder):
        return {"percentile": m.percentile, "bins": m.bins, "channels": m.channels, "recording": bool(m.recording)}
    if isinstance(m, DAQCFS):
        return {
            "levels": m.levels,
            "reference_levels": m.reference_levels,
            "reference": bool(m.reference),
            "channels": m.channels,
        }
    if isinstance(m, QCFS):
        return {"levels": m.levels, "channels": m.channels}
    if isinstance(m, ParallelIF):
        return {
            "T": m.T,
            "mode": m.mode,
            "has_da": bool(m.has_da),
            "fused": bool(getattr(m, "fused", False)),
            "channels": m.channels,
        }
    return {"T": m.T, "mode": m.mode}  # TimeExpand / TimeMean


def jsonable(value: object, path: str, dropped: list[str]) -> object:
    """``value`` as JSON data (dataclasses → dicts, tuples → lists), or ``_DROP`` with ``path`` added to ``dropped``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, enum.Enum):
        return jsonable(value.value, path, dropped)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            sub = jsonable(v, f"{path}.{k}", dropped) if isinstance(k, str) else _DROP
            if sub is _DROP and not isinstance(k, str):
                dropped.append(f"{path}[{k!r}]")
            if sub is not _DROP:
                out[k] = sub
        return out
    if isinstance(value, (list, tuple)):
        items = [jsonable(v, f"{path}[{i}]", dropped) for i, v in enumerate(value)]
        return [v for v in items if v is not _DROP]
    dropped.append(f"{path} ({type(value).__name__})")
    return _DROP


_DROP = object()


def _uniform(mods: dict[str, nn.Module], key: str):
    values = {name: module_attrs(m)[key] for name, m in mods.items()}
    distinct = set(values.values())
    if len(distinct) > 1:
        a, b = sorted(distinct, key=repr)[:2]
        raise FxsnnError(
            f"fxsnn.save: the sites disagree on {key} ({a!r} and {b!r}); fxsnn.save records networks built by "
            "fxsnn's passes, where every site shares it. Rebuild the network with the passes, then save it"
        )
    return distinct.pop()


def _passes(gm: fx.GraphModule, sites) -> list[dict]:
    """The structural passes that rebuild ``gm``'s sites from a fresh trace of the ANN."""
    from ..passes import normalize

    modules = dict(gm.named_modules())
    mods = {s.name: modules.get(s.name) for s in sites}
    types = {type(m).__name__ for m in mods.values()}
    if not sites:
        return []
    if not types & set(MODULE_TYPES):  # ReLU modules and functional spellings: a trace, maybe normalised
        return [{"name": "normalize"}] if node_list(normalize(gm)) == node_list(gm) else []
    if len(types) > 1 or not types <= set(MODULE_TYPES):
        raise FxsnnError(
            f"fxsnn.save: the sites are of mixed or unknown kinds ({', '.join(sorted(types))}); save a network at "
            "one stage of fxsnn's passes (all ReLU, recorders, QCFS, DA-QCFS or ParallelIF)"
        )
    kind = types.pop()
    if kind == "ActivationRecorder":
        rec = {"name": "insert_recorders", "percentile": _uniform(mods, "percentile"), "bins": _uniform(mods, "bins")}
        return [rec]
    if getattr(gm, "meta", {}).get("fxsnn.qcfs_backbone"):  # θ and L came from the model (passes.adopt_qcfs)
        steps = [{"name": "adopt_qcfs"}]
    else:
        steps = [{"name": "insert_recorders", "percentile": None, "bins": 1024}]
    if kind == "QCFS":
        return steps + [{"name": "to_qcfs", "levels": _uniform(mods, "levels")}]
    if kind == "DAQCFS":
        ref = _uniform(mods, "reference_levels")
        if ref is not None:
            steps.append({"name": "to_qcfs", "levels": ref})
        return steps + [{"name": "to_da_qcfs", "levels": _uniform(mods, "levels")}]
    T, has_da = _uniform(mods, "T"), _uniform(mods, "has_da")
    steps.append({"name": "to_da_qcfs" if has_da else "to_qcfs", "levels": T})  # lowering takes QCFS / DA-QCFS only
    return steps + [{"name": "lower_to_paraif", "T": T, "mode": _uniform(mods, "mode")}]


def _meta(gm: nn.Module) -> tuple[dict, list[str]]:
    dropped: list[str] = []
    meta = getattr(gm, "meta", None)
    if not isinstance(meta, dict):
        return {}, dropped
    out = jsonable(meta, "meta", dropped)
    if dropped:
        warnings.warn(
            "fxsnn.save: these meta values are not JSON data and were not saved: " + ", ".join(dropped[:8]),
            stacklevel=3,
        )
    return out, dropped


def build_record(gm: nn.Module) -> dict:
    """The JSON record of ``gm`` (any stage): enough, with the ANN, to rebuild it exactly."""
    from ..graph.sites import find_sites
    from ..report.summarize import summary

    record: dict = {
        "class": type(gm).__name__,
        "training": sorted(name for name, m in gm.named_modules() if m.training),
        "frozen": sorted(name for name, p in gm.named_parameters() if not p.requires_grad),
    }
    record["meta"], record["meta_dropped"] = _meta(gm)
    if not isinstance(gm, fx.GraphModule):
        record.update(kind="module", parameters=sum(p.numel() for p in gm.parameters()), module_repr=repr(gm))
        return record
    sites = find_sites(gm)
    s = summary(gm)
    record.update(
        kind="graph",
        stage=s.stage,
        sites=len(s),
        delta_b_params=s.delta_b_params,
        parameters=s.network_params,
        leaf_modules=leaf_modules(gm),
        passes=_passes(gm, sites),
        site_table=[{"name": x.name, "kind": x.kind, "pattern": x.pattern, "channels": x.channels} for x in sites],
        nodes=node_list(gm),
        modules={
            name: {"type": type(m).__name__, **module_attrs(m)}
            for name, m in gm.named_modules()
            if type(m).__name__ in MODULE_TYPES and type(m) is MODULE_TYPES[type(m).__name__]
        },
        summary=s.to_dict()["sites"],
        analog=s.analog.to_dict(),
        hybrid=bool(s.hybrid),
        code=gm.code.strip(),
    )
    cells = [m for m in gm.modules() if isinstance(m, ParallelIF)]
    if cells:
        record.update(T=cells[0].T, mode=cells[0].mode)
    conv = record["meta"].get("fxsnn.convert")
    if isinstance(conv, dict):
        record["conversion"] = {k: conv.get(k) for k in ("method", "T", "seed", "config", "hybrid", "analog")}
    return record


def tensors_of(gm: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as independent, contiguous CPU tensors (safetensors refuses shared storage)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in gm.state_dict().items()}
