"""Rebuild a saved network from the ANN the user passes and the file's JSON record, then load its tensors.

Every value read from the file is checked (type, range, consistency with the
tensors) before it is used; the only code that runs is fxsnn's own passes on
the user's model. Any problem raises :class:`~fxsnn.io.archive.SaveFileError`
naming the step, the first mismatch and the fix.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from .archive import SaveFileError
from .record import MODULE_TYPES, node_list

__all__ = ["rebuild", "check_str"]

_MAX = 1 << 20  # T, levels, channels: far above any real network, far below an allocation that hurts
_MODES = ("spike", "rate")


class _Bad(Exception):
    """A record value failed a check; the message says which (turned into SaveFileError with the path)."""


# -- value checks ----------------------------------------------------------------------------
def _int(v, what: str, lo: int = 1, hi: int = _MAX) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _Bad(f"{what} must be an integer in [{lo}, {hi}]; the file has {v!r:.60}")
    return v


def _opt_int(v, what: str, lo: int = 1) -> int | None:
    return None if v is None else _int(v, what, lo)


def _bool(v, what: str) -> bool:
    if not isinstance(v, bool):
        raise _Bad(f"{what} must be true or false; the file has {v!r:.60}")
    return v


def check_str(v: object, what: str, limit: int = 1000) -> str:
    if not isinstance(v, str) or len(v) > limit:
        raise _Bad(f"{what} must be a string of at most {limit} characters; the file has {type(v).__name__}")
    return v


def _mode(v, what: str) -> str:
    if v not in _MODES:
        raise _Bad(f"{what} must be 'spike' or 'rate'; the file has {v!r:.60}")
    return v


def _percentile(v, what: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 < v <= 100.0):
        raise _Bad(f"{what} must be null or a number in (0, 100]; the file has {v!r:.60}")
    return float(v)


def _bins(v, what: str) -> int:
    v = _int(v, what, 2, 1 << 16)
    if v & (v - 1):
        raise _Bad(f"{what} must be a power of two; the file has {v}")
    return v


def _list(v, what: str, limit: int = 1 << 20) -> list:
    if not isinstance(v, list) or len(v) > limit:
        raise _Bad(f"{what} must be a list (at most {limit} entries); the file has {type(v).__name__}")
    return v


def _keys(d, what: str, keys: dict) -> dict:
    if not isinstance(d, dict) or set(d) != set(keys):
        found = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise _Bad(f"{what} must have exactly the fields {sorted(keys)}; the file has {found!s:.200}")
    return {k: check(d[k], f"{what}.{k}") for k, check in keys.items()}


_PASS_ARGS = {
    "normalize": {},
    "insert_recorders": {"percentile": _percentile, "bins": _bins},
    "adopt_qcfs": {},
    "to_qcfs": {"levels": _int},
    "to_da_qcfs": {"levels": _int},
    "lower_to_paraif": {"T": _int, "mode": _mode},
}
_NEXT = {
    None: ("normalize", "insert_recorders", "adopt_qcfs"),
    "normalize": ("insert_recorders",),
    "insert_recorders": ("to_qcfs", "to_da_qcfs", "lower_to_paraif"),
    "adopt_qcfs": ("to_qcfs", "to_da_qcfs", "lower_to_paraif"),
    "to_qcfs": ("to_da_qcfs", "lower_to_paraif"),
    "to_da_qcfs": ("lower_to_paraif",),
    "lower_to_paraif": (),
}
_ATTRS = {
    "ActivationRecorder": {"percentile": _percentile, "bins": _bins, "channels": _opt_int, "recording": _bool},
    "QCFS": {"levels": _int, "channels": _int},
    "DAQCFS": {"levels": _int, "reference_levels": _opt_int, "reference": _bool, "channels": _int},
    "ParallelIF": {"T": _int, "mode": _mode, "has_da": _bool, "fused": _bool, "channels": _int},
    "TimeExpand": {"T": _int, "mode": _mode},
    "TimeMean": {"T": _int, "mode": _mode},
}
_SETTABLE = {"recording", "reference", "mode", "fused"}  # the rest must come out of the passes as recorded


def _passes(v) -> list[tuple[str, dict]]:
    out, prev = [], None
    for i, step in enumerate(_list(v, "passes", 8)):
        name = step.get("name") if isinstance(step, dict) else None
        if not isinstance(name, str) or name not in _PASS_ARGS:
            raise _Bad(f"passes[{i}] names no fxsnn pass ({name!r:.60}); known: {', '.join(_PASS_ARGS)}")
        if name not in _NEXT[prev]:
            raise _Bad(f"passes[{i}] {name} cannot follow {prev or 'the trace'}")
        args = {k: val for k, val in step.items() if k != "name"}
        out.append((name, _keys(args, f"passes[{i}] ({name})", _PASS_ARGS[name])))
        prev = name
    return out


def _modules(v) -> dict[str, dict]:
    if not isinstance(v, dict) or len(v) > _MAX:
        raise _Bad(f"modules must be an object; the file has {type(v).__name__}")
    out = {}
    for name, attrs in v.items():
        check_str(name, "a module name")
        kind = attrs.get("type") if isinstance(attrs, dict) else None
        if not isinstance(kind, str) or kind not in _ATTRS:
            raise _Bad(f"module {name!r:.100} has type {kind!r:.60}, not one of {', '.join(_ATTRS)}")
        rest = {k: val for k, val in attrs.items() if k != "type"}
        out[name] = {"type": kind, **_keys(rest, f"module {name!r:.100}", _ATTRS[kind])}
    return out


# -- rebuilding ------------------------------------------------------------------------------
def _site_channels(name: str, tensors: dict, recorded: dict) -> int:
    attrs = recorded.get(name)
    if attrs is None:
        sites = ", ".join(n for n, a in recorded.items() if not a["type"].startswith("Time"))
        raise _Bad(
            f"the model you passed has a site {name!r:.100} that the file does not record (it has: {sites:.300})"
        )
    c = attrs.get("channels")
    t = tensors.get(f"{name}.theta", tensors.get(f"{name}.theta_pre"))
    if c is None or t is None or t.dim() != 1 or t.numel() != c:
        raise _Bad(
            f"site {name!r:.100}: the record's channels ({c!r:.20}) do not match its θ tensor "
            f"({'absent' if t is None else tuple(t.shape)})"
        )
    return c


def _prime(gm: nn.Module, tensors: dict, recorded: dict) -> None:
    """Give every recorder a placeholder range (θ = 1) so the next pass runs; load_state_dict sets the real θ."""
    from ..nn import ActivationRecorder

    for name, rec in gm.named_modules():
        if isinstance(rec, ActivationRecorder):
            c = _site_channels(name, tensors, recorded)
            if rec.channels not in (None, c):
                raise _Bad(f"site {name!r}: the model you passed has {rec.channels} channels there; the file {c}")
            if rec.max_val.numel() != c:
                rec._resize(c, rec.max_val.device)
            rec.max_val.fill_(1.0)
            rec.num_batches.fill_(1)


def _run_passes(gm: fx.GraphModule, steps, tensors: dict, recorded: dict, hybrid: bool) -> fx.GraphModule:
    from ..passes import adopt_qcfs, insert_recorders, lower_to_paraif, normalize, to_da_qcfs, to_qcfs

    passes = {f.__name__: f for f in (normalize, insert_recorders, adopt_qcfs, to_qcfs, to_da_qcfs, lower_to_paraif)}
    for name, kwargs in steps:
        if name not in ("normalize", "insert_recorders"):
            _prime(gm, tensors, recorded)
        extra = {"allow_analog": True} if hybrid and name == "insert_recorders" else {}
        try:
            gm = passes[name](gm, **kwargs, **extra)
        except Exception as exc:  # noqa: BLE001 - any failure of a pass on this model is a mismatch with the file
            raise _Bad(
                f"re-applying {name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) to the model you passed "
                f"failed: {type(exc).__name__}: {exc}"
            ) from exc
    return gm


def _compare_sites(gm: fx.GraphModule, table) -> None:
    from ..graph.sites import find_sites

    table = _list(table, "site_table")
    got = [{"name": s.name, "kind": s.kind, "pattern": s.pattern, "channels": s.channels} for s in find_sites(gm)]
    for i, (want, have) in enumerate(zip(table, got)):
        if want != have:
            raise _Bad(f"site {i} differs: the file records {want!r:.300}, the model you passed gives {have!r}")
    if len(table) != len(got):
        raise _Bad(f"the file records {len(table)} sites; the model you passed rebuilds to {len(got)}")


def _recorded_hybrid(header: dict) -> tuple[list | None, bool]:
    """``(analog ops recorded, or None for a file written before they were, whether to rebuild a hybrid)``."""
    from .saving import analog_ops

    if "analog" not in header:
        return None, True  # the conversion that wrote it never refused a hybrid: rebuild what the record says
    try:
        ops = analog_ops(header)
    except SaveFileError as exc:
        raise _Bad(str(exc)) from None
    if not isinstance(header.get("hybrid"), bool):
        raise _Bad(f"hybrid must be true or false; the file has {header.get('hybrid')!r:.60}")
    return ops, header["hybrid"]


def _compare_analog(gm: fx.GraphModule, recorded: list | None) -> None:
    from ..graph.sites import find_analog_ops

    if recorded is None:
        return
    got = list(find_analog_ops(gm))
    for i, (want, have) in enumerate(zip(recorded, got)):
        if want != have:
            raise _Bad(f"analog op {i} differs: the file records {want}, the model you passed gives {have!r:.300}")
    if len(recorded) != len(got):
        raise _Bad(f"the file records {len(recorded)} analog ops; the model you passed has {len(got)}")


def _compare_nodes(gm: fx.GraphModule, nodes) -> None:
    nodes, got = _list(nodes, "nodes"), node_list(gm)
    for i, (want, have) in enumerate(zip(nodes, got)):
        if want != have:
            raise _Bad(f"graph node {i} differs: the file records {want!r:.200}, the rebuilt graph has {have!r}")
    if len(nodes) != len(got):
        raise _Bad(f"the file records {len(nodes)} graph nodes; the rebuilt graph has {len(got)}")


def _apply_modules(gm: nn.Module, recorded: dict, final_mode: str | None) -> None:
    from .record import module_attrs

    have = {n: m for n, m in gm.named_modules() if type(m) in MODULE_TYPES.values()}
    for name in sorted(set(have) ^ set(recorded))[:1]:
        where = (
            "the file but not in the rebuilt network" if name in recorded else "the rebuilt network but not the file"
        )
        raise _Bad(f"module {name!r:.100} is in {where}")
    for name, m in have.items():
        want = recorded[name]
        if type(m).__name__ != want["type"]:
            raise _Bad(f"module {name!r} is a {want['type']} in the file; the rebuild made a {type(m).__name__}")
        got = module_attrs(m)
        for key, value in want.items():
            if key == "type" or key in _SETTABLE or (key == "channels" and want["type"] == "ActivationRecorder"):
                continue
            if got[key] != value:
                raise _Bad(f"module {name!r}: {key} is {value!r} in the file; the rebuild gives {got[key]!r}")
        if "mode" in want and final_mode is not None and want["mode"] != final_mode:
            raise _Bad(f"module {name!r}: mode {want['mode']!r} differs from the network's {final_mode!r}")
        for key in _SETTABLE & set(want):
            setattr(m, key, want[key])


def _rebuild_graph(header: dict, model: nn.Module, tensors: dict) -> nn.Module:
    from ..graph.edit import copy_graph_module
    from ..graph.tracing import trace

    steps = _passes(header.get("passes"))
    recorded = _modules(header.get("modules"))
    leaves = [check_str(n, "a leaf module name") for n in _list(header.get("leaf_modules"), "leaf_modules")]
    try:
        gm = copy_graph_module(model) if isinstance(model, fx.GraphModule) else trace(model, leaf_modules=leaves)
    except Exception as exc:  # noqa: BLE001
        raise _Bad(f"tracing the model you passed failed: {exc}") from exc
    analog, hybrid = _recorded_hybrid(header)
    gm = _run_passes(gm, steps, tensors, recorded, hybrid)
    _compare_sites(gm, header.get("site_table"))
    _compare_analog(gm, analog)
    _compare_nodes(gm, header.get("nodes"))
    final_mode = steps[-1][1]["mode"] if steps and steps[-1][0] == "lower_to_paraif" else None
    _apply_modules(gm, recorded, final_mode)
    return gm


# -- tensors and flags -----------------------------------------------------------------------
def _resize_recorders(gm: nn.Module, tensors: dict) -> None:
    """Recorders built without a channel count take it from the file (whose hist, if any, must match)."""
    from ..nn import ActivationRecorder

    for name, rec in gm.named_modules():
        t = tensors.get(f"{name}.max_val")
        if isinstance(rec, ActivationRecorder) and t is not None and t.dim() == 1 and rec.max_val.numel() == 0:
            hist = tensors.get(f"{name}.hist")
            if rec.percentile is not None and (hist is None or tuple(hist.shape) != (t.numel(), rec.bins + 1)):
                raise _Bad(f"recorder {name!r}: its hist tensor does not match {t.numel()} channels")
            rec._resize(t.numel(), rec.max_val.device)


def _load_tensors(gm: nn.Module, tensors: dict) -> None:
    _resize_recorders(gm, tensors)
    want = gm.state_dict()
    for key in sorted(set(want) ^ set(tensors))[:1]:
        raise _Bad(f"tensor {key!r:.200} is {'missing from' if key in want else 'unexpected in'} the file")
    for key, t in want.items():
        f = tensors[key]
        if tuple(f.shape) != tuple(t.shape) or f.dtype != t.dtype:
            raise _Bad(
                f"tensor {key!r} is {f.dtype} {tuple(f.shape)} in the file; the rebuilt network needs {t.dtype} "
                f"{tuple(t.shape)} (pass the model in the dtype it was saved in, e.g. model.double())"
            )
    try:
        gm.load_state_dict(tensors, strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise _Bad(f"loading the tensors failed: {exc}") from exc
    _check_thresholds(gm)


def _check_thresholds(gm: nn.Module) -> None:
    from ..nn import QCFS, ParallelIF

    for name, m in gm.named_modules():
        th = m.theta if isinstance(m, QCFS) else m.theta_pre if isinstance(m, ParallelIF) else None
        if th is not None and not bool(((th > 0) & torch.isfinite(th)).all()):
            raise _Bad(f"site {name!r}: θ must be finite and > 0 in every channel; the file's is not")


def _apply_flags(gm: nn.Module, header: dict) -> None:
    names = dict(gm.named_modules())
    params = dict(gm.named_parameters())
    training = {check_str(n, "a training entry") for n in _list(header.get("training"), "training")}
    frozen = {check_str(n, "a frozen entry") for n in _list(header.get("frozen"), "frozen")}
    for what, given, known in (("training", training, names), ("frozen", frozen, params)):
        for n in sorted(given - set(known))[:1]:
            raise _Bad(f"{what} names {n!r:.100}, which the rebuilt network does not have")
    for n, m in names.items():
        m.training = n in training
    for n, p in params.items():
        p.requires_grad_(n not in frozen)
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise _Bad(f"meta must be an object; the file has {type(meta).__name__}")
    if isinstance(getattr(gm, "meta", None), dict):
        gm.meta.update(_with_reports(copy.deepcopy(meta)))


def _with_reports(meta: dict) -> dict:
    """``meta`` with its stage reports as :class:`fxsnn.report.StageReport` rows again (checked values only):
    ``["fxsnn.convert"]["stages"]``, and ``["fxsnn.stage1"]`` / ``["fxsnn.stage2"]`` when they are in that form
    (older files hold a plain dict there, kept as it is)."""
    from ..report.stages import StageReports, row_from_json

    conv = meta.get("fxsnn.convert")
    try:
        if isinstance(conv, dict) and "stages" in conv:
            conv["stages"] = StageReports.from_json(conv["stages"])
        for key in ("fxsnn.stage1", "fxsnn.stage2"):
            if isinstance(meta.get(key), dict) and "stage" in meta[key]:
                meta[key] = row_from_json(meta[key])
    except ValueError as exc:
        raise _Bad(f"the recorded stage report is malformed ({exc})") from None
    return meta


def rebuild(header: dict, tensors: dict, model: nn.Module, path: str) -> nn.Module:
    """The saved network, rebuilt from ``model`` (the ANN) and checked against ``header``; ``SaveFileError`` if not."""
    try:
        ann = header.get("ann")
        want = check_str(ann.get("class") if isinstance(ann, dict) else None, "ann.class")
        kind = header.get("kind")
        if kind == "module" and type(model).__name__ != want:
            raise _Bad(f"it was saved from a {want}; you passed a {type(model).__name__}")
        if kind == "module":
            gm = copy.deepcopy(model)
        elif kind == "graph":
            gm = _rebuild_graph(header, model, tensors)
        else:
            raise _Bad(f"kind must be 'module' or 'graph'; the file has {kind!r:.60}")
        _load_tensors(gm, tensors)
        _apply_flags(gm, header)
    except _Bad as exc:
        raise SaveFileError(
            f"{path!r} cannot be rebuilt from the model you passed: {exc}; pass the ANN this SNN was converted from "
            "(the same architecture and dtype), or re-save the network with fxsnn.save"
        ) from (exc.__cause__ or None)
    except (TypeError, KeyError, AttributeError, IndexError, ValueError) as exc:  # a shape no check above foresaw
        if isinstance(exc, SaveFileError):
            raise
        raise SaveFileError(
            f"{path!r}: the file's record is malformed ({type(exc).__name__}: {exc}); re-create it with fxsnn.save"
        ) from None
    return gm
