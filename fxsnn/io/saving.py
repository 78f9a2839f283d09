"""``fxsnn.save`` / ``fxsnn.load``: a network in one file that loads without unpickling or executing anything.

File layout (a zip archive of stored members, format 2):

- ``fxsnn.json`` — JSON only: format name and version, fxsnn / torch
  versions, the SHA-256 of the tensors, a description (stage, T, mode, site
  count, Δb count) and the conversion record: the ANN's class (and the
  ``package.module:function`` spec and arguments when the CLI built it), the
  structural passes that rebuild the network from the ANN with their arguments,
  every site (name, kind, pattern, channels), every analog op (kind, node,
  module path) and whether they make it a hybrid, the graph's node list, the
  non-tensor attributes of every module fxsnn inserted (``T``, ``mode``,
  levels, ...), train/eval flags, frozen parameters, ``meta`` as JSON data, the
  per-site summary and the readable graph code (text for ``fxsnn inspect``,
  never executed);
- ``tensors.safetensors`` — the state dict (θ, ψ_DA, φ_DA, Λ_PC, b(t), Δb and
  the ANN's weights) in the safetensors format: a typed flat layout that
  loads with no code.

:func:`load` needs the ANN (``model=``): it traces it, re-applies the recorded
passes, checks the rebuilt sites, graph and module attributes against the
record, and loads the tensors with ``load_state_dict(strict=True)``. A file can
therefore never make fxsnn import or call code the user did not name.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import FxsnnError
from .archive import FORMAT, FORMAT_VERSION, SaveFileError, read_archive, write_archive
from .paths import check_writable

if TYPE_CHECKING:
    from ..report.stages import StageReports
    from ..report.summarize import NetworkSummary

__all__ = [
    "save",
    "load",
    "read_header",
    "header_summary",
    "header_stages",
    "analog_ops",
    "SaveFileError",
    "FORMAT",
    "FORMAT_VERSION",
]

_SPEC = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")


def _check_spec(model_spec, model_args) -> dict:
    from .record import jsonable

    if model_spec is None:
        if model_args:
            raise TypeError("fxsnn.save: model_args needs model_spec")
        return {}
    if not isinstance(model_spec, str) or not _SPEC.match(model_spec):
        raise ValueError(f"fxsnn.save: model_spec must look like 'package.module:function'; got {model_spec!r}")
    args = dict(model_args or {})
    dropped: list[str] = []
    plain = jsonable(args, "model_args", dropped)
    if dropped or not all(isinstance(k, str) for k in args):
        raise TypeError(f"fxsnn.save: model_args must be JSON data (numbers, strings, lists); not {dropped or args}")
    return {"spec": model_spec, "args": plain}


def save(
    gm: nn.Module, path: str | os.PathLike, *, model_spec: str | None = None, model_args: dict | None = None
) -> str:
    """Write ``gm`` (any stage; usually the lowered SNN) to ``path``; returns the path.

    ``model_spec`` / ``model_args``: how the ANN was built (``"pkg.mod:fn"`` and
    its keyword arguments), recorded so that a reader can see it and confirm it
    (``fxsnn.load(path, model_spec=...)``); the CLI's ``convert`` fills them in.
    ``meta`` is saved as JSON data (dataclasses become dicts); values that are
    not JSON data are dropped with a warning. The write is atomic (an
    exclusively created temporary file in the same directory, then a rename).
    Raises ``FileNotFoundError`` when the directory does not exist, and
    :class:`fxsnn.FxsnnError` for a network fxsnn's passes cannot rebuild.

    Example::

        >>> fxsnn.save(snn, "resnet20_T4.fxsnn")
        >>> snn2 = fxsnn.load("resnet20_T4.fxsnn", model=ann)
    """
    from safetensors.torch import save as save_tensors

    from .._version import __version__
    from .record import build_record, tensors_of

    if not isinstance(gm, nn.Module):
        raise TypeError(f"fxsnn.save expects an nn.Module (the converted GraphModule); got {type(gm).__name__}")
    path = os.fspath(path)
    check_writable(path)
    if any(m._forward_hooks or m._forward_pre_hooks for m in gm.modules()):
        raise FxsnnError(
            "fxsnn.save could not serialise the network: it has forward hooks, which are code; remove them first"
        )
    record = build_record(gm)
    record["ann"] = {"class": type(gm).__name__, **_check_spec(model_spec, model_args)}
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "fxsnn_version": __version__}
    header.update(torch_version=torch.__version__, **record)
    try:
        blob = save_tensors(tensors_of(gm))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own types
        raise FxsnnError(f"fxsnn.save could not serialise the tensors: {type(exc).__name__}: {exc}") from exc
    write_archive(path, header, blob)
    return path


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a file written by :func:`save` (the whole conversion record), read without rebuilding.

    Raises :class:`SaveFileError` for a foreign, corrupt, old-format or too-new file.
    """
    return read_archive(os.fspath(path), tensors=False)[0]


def _tensors(blob: bytes, path: str) -> dict:
    from safetensors.torch import load as load_tensors

    try:
        tensors = load_tensors(blob)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own types
        raise SaveFileError(f"{path!r}: the tensor data is unreadable ({type(exc).__name__}: {exc})") from None
    for key in tensors:
        if not isinstance(key, str) or len(key) > 1000:
            raise SaveFileError(f"{path!r}: a tensor name is longer than 1000 characters; the file is forged")
    return tensors


def _model_from_spec(header: dict, model_spec: str, path: str) -> nn.Module:
    from .loaders import load_model

    ann = header.get("ann") if isinstance(header.get("ann"), dict) else {}
    recorded, args = ann.get("spec"), ann.get("args", {})
    if not isinstance(recorded, str) or recorded != model_spec:
        raise SaveFileError(
            f"{path!r} records the model spec {recorded!r:.200}, not {model_spec!r}: fxsnn builds a model from a "
            "spec only when you name the one the file records. Build the ANN yourself and pass model=ann"
        )
    if not isinstance(args, dict):
        raise SaveFileError(f"{path!r}: the recorded model arguments are not an object")
    return load_model(model_spec, **args)


def load(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    model_spec: str | None = None,
    map_location: str | torch.device | None = None,
) -> nn.Module:
    """Rebuild the network saved at ``path`` from its ANN; outputs are bit-identical to the saved network.

    Pass the ANN it was converted from as ``model`` (fxsnn traces a copy,
    re-applies the recorded passes, checks sites, graph and attributes against
    the record and loads the tensors strictly), or confirm the recorded
    ``package.module:function`` spec with ``model_spec=`` (it must equal the one
    in the file; :func:`read_header` shows it), which imports that module and
    calls it with the recorded arguments. ``map_location`` moves the result
    (e.g. ``"cpu"``). Nothing in the file is unpickled or executed. Raises
    :class:`SaveFileError` for a foreign, corrupt, forged, old-format or
    too-new file, and for a model that does not rebuild to the saved network.

    Example::

        >>> snn = fxsnn.load("resnet20_T4.fxsnn", model=resnet20())
    """
    from .rebuild import rebuild

    path = os.fspath(path)
    if model is not None and model_spec is not None:
        raise TypeError("fxsnn.load: pass model= or model_spec=, not both")
    header, blob = read_archive(path)
    if model is None and model_spec is None:
        ann = header.get("ann") if isinstance(header.get("ann"), dict) else {}
        spec = f" (the file records model_spec={ann['spec']!r})" if isinstance(ann.get("spec"), str) else ""
        raise SaveFileError(
            f"{path!r}: fxsnn.load needs the ANN the network was converted from{spec}: fxsnn.load(path, model=ann), "
            "or fxsnn.load(path, model_spec='package.module:function') naming the recorded spec. A file never "
            "makes fxsnn import code you did not name"
        )
    if model_spec is not None:
        model = _model_from_spec(header, model_spec, path)
    if not isinstance(model, nn.Module):
        raise TypeError(f"fxsnn.load: model must be an nn.Module (the ANN); got {type(model).__name__}")
    gm = rebuild(header, _tensors(blob, path), model, path)
    return gm.to(map_location) if map_location is not None else gm


def header_summary(header: dict) -> NetworkSummary | None:
    """The :class:`fxsnn.report.NetworkSummary` recorded in a header (for ``fxsnn inspect``), or ``None``; checked, not rebuilt."""
    from ..report.summarize import NetworkSummary, SiteSummary

    rows = header.get("summary")
    if not isinstance(rows, list):
        return None
    fields = SiteSummary.__dataclass_fields__
    out = []
    for row in rows:
        if not isinstance(row, dict) or set(row) != set(fields):
            raise SaveFileError("the header's summary rows do not have the fields of fxsnn.report.SiteSummary")
        out.append(SiteSummary(**{k: _cell(k, row[k]) for k in fields}))
    return NetworkSummary(
        out, network_params=_cell("trainable", header.get("parameters", 0)), analog=analog_ops(header)
    )


def analog_ops(header: dict) -> list:
    """The analog ops a header records (``[]`` for a file written before they were recorded); checked, as data."""
    from ..graph.sites import AnalogOp

    rows = header.get("analog", [])
    if not isinstance(rows, list) or len(rows) > 1 << 20:
        raise SaveFileError("the header's analog ops are not a list")
    out = []
    for row in rows:
        if not isinstance(row, dict) or set(row) != {"kind", "node", "path"}:
            raise SaveFileError("the header's analog ops do not have the fields kind, node and path")
        if not all(isinstance(v, str) and len(v) <= 1000 for v in row.values()):
            raise SaveFileError("the header's analog ops have a field that is not a short string")
        out.append(AnalogOp(row["kind"], row["node"], row["path"]))
    return out


def header_stages(header: dict) -> StageReports | None:
    """The :class:`fxsnn.report.StageReports` a header records (what each stage of ``fxsnn.convert`` did), or ``None``
    for a file without one (saved before fxsnn recorded it, or not made by ``fxsnn.convert``); checked, not rebuilt."""
    from ..report.stages import StageReports

    meta = header.get("meta")
    conv = meta.get("fxsnn.convert") if isinstance(meta, dict) else None
    if not isinstance(conv, dict) or "stages" not in conv:
        return None
    try:
        return StageReports.from_json(conv["stages"])
    except ValueError as exc:
        raise SaveFileError(f"the header's stage report is malformed: {exc}") from None


def _cell(key: str, v):
    if key in ("site", "kind", "pattern") and isinstance(v, str) and len(v) <= 1000:
        return v
    if v is None and key not in ("site", "kind", "pattern", "delta_b_params", "trainable"):
        return None
    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, float) for x in v):
        return (v[0], v[1])
    if (
        isinstance(v, int)
        and not isinstance(v, bool)
        and key in ("channels", "levels", "T", "delta_b_params", "trainable")
    ):
        return v
    raise SaveFileError(f"the header's summary has a bad {key} value ({v!r:.60})")
