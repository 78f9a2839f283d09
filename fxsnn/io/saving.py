"""``fxsnn.save`` / ``fxsnn.load``: a converted network in one file, outputs bit-identical after loading.

File layout (a zip archive):

- ``fxsnn.json`` — a header read *before* anything is unpickled: format name
  and version, the fxsnn and torch versions that wrote it, the SHA-256 of the
  payload, and a description (stage, T, mode, site count, Δb count);
- ``model.pt`` — ``torch.save`` of ``{"module", "meta", "training"}``: the whole GraphModule — graph (as the code
  torch.fx regenerates it from), every submodule, buffer and parameter (θ,
  ψ_DA, φ_DA, Λ_PC, b(t), Δb), and plain attributes such as each neuron's
  ``T`` and ``mode`` — plus its ``meta`` dict and train/eval flag, which
  torch.fx does not restore by itself.

Security: a GraphModule can only be rebuilt by unpickling (it holds
arbitrary user module classes and regenerated code), so :func:`load` calls
``torch.load(weights_only=False)``, which can execute code from the file.
**Load only files you trust.** The header and checksum are verified first, so
a file from an incompatible fxsnn version or a damaged file is refused before
any unpickling; the checksum detects corruption, not deliberate tampering.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile

import torch
from torch import fx, nn

from ..errors import FxsnnError
from .paths import check_parent_dir

__all__ = ["save", "load", "read_header", "SaveFileError", "FORMAT", "FORMAT_VERSION"]

FORMAT = "fxsnn.network"
#: Bumped whenever a file written now could not be read back by an older fxsnn.
FORMAT_VERSION = 1
_HEADER, _PAYLOAD = "fxsnn.json", "model.pt"


class SaveFileError(FxsnnError, ValueError):
    """A file given to :func:`fxsnn.load` is not a readable fxsnn network (corrupt, foreign, or too new)."""


def _describe(gm: nn.Module) -> dict:
    from ..modes import get_mode, neurons, time_steps
    from ..report.summarize import summary

    info: dict = {"class": type(gm).__name__}
    if isinstance(gm, fx.GraphModule):
        s = summary(gm)
        info.update(stage=s.stage, sites=len(s), delta_b_params=s.delta_b_params, parameters=s.network_params)
        if neurons(gm):
            info.update(T=time_steps(gm), mode=get_mode(gm))
    else:
        info.update(parameters=sum(p.numel() for p in gm.parameters()))
    return info


def save(gm: nn.Module, path: str | os.PathLike) -> str:
    """Write ``gm`` (any stage; usually the lowered SNN) to ``path``; returns the path.

    The write is atomic (a temporary file in the same directory, then a
    rename). Raises ``FileNotFoundError`` when the directory does not exist.
    Classes of user modules inside ``gm`` must be importable (defined in a
    module, not in ``__main__`` of a script) for :func:`load` to rebuild them.

    Example::

        >>> fxsnn.save(snn, "resnet20_T4.fxsnn")
        >>> snn2 = fxsnn.load("resnet20_T4.fxsnn")
    """
    from .._version import __version__

    if not isinstance(gm, nn.Module):
        raise TypeError(f"fxsnn.save expects an nn.Module (the converted GraphModule); got {type(gm).__name__}")
    path = os.fspath(path)
    check_parent_dir(path)
    buf = io.BytesIO()
    # torch.fx rebuilds a GraphModule from its code on unpickling and starts it with an empty ``meta`` and in
    # training mode, so both travel next to it.
    state = {"module": gm, "meta": getattr(gm, "meta", None), "training": gm.training}
    try:
        torch.save(state, buf)
    except Exception as exc:  # pickling errors come in many types
        raise FxsnnError(
            f"fxsnn.save could not serialise the network: {type(exc).__name__}: {exc}. Remove forward hooks and "
            "attributes that cannot be pickled (lambdas, open files) from the model"
        ) from exc
    payload = buf.getvalue()
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fxsnn_version": __version__,
        "torch_version": torch.__version__,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "bytes": len(payload),
        **_describe(gm),
    }
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(_HEADER, json.dumps(header, indent=2, sort_keys=True))
            zf.writestr(_PAYLOAD, payload)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _open(path: str) -> zipfile.ZipFile:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    if os.path.isdir(path):
        raise SaveFileError(f"{path!r} is a directory; give the file written by fxsnn.save")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SaveFileError(
            f"{path!r} is not an fxsnn network file (not a readable archive: {exc}); it may be truncated or corrupt, "
            "or written by something else. Re-create it with fxsnn.save(gm, path)"
        ) from None


def read_header(path: str | os.PathLike) -> dict:
    """The header of a file written by :func:`save`, without unpickling anything.

    Raises :class:`SaveFileError` for a foreign, corrupt or too-new file.
    """
    path = os.fspath(path)
    with _open(path) as zf:
        return _header(zf, path)


def _header(zf: zipfile.ZipFile, path: str) -> dict:
    from .._version import __version__

    names = set(zf.namelist())
    if _HEADER not in names or _PAYLOAD not in names:
        hint = (
            " (it looks like a torch.save file: use torch.load)" if any(n.endswith("data.pkl") for n in names) else ""
        )
        raise SaveFileError(f"{path!r} is not an fxsnn network file: it has no {_HEADER} header{hint}")
    try:
        header = json.loads(zf.read(_HEADER))
    except (ValueError, zipfile.BadZipFile, OSError) as exc:
        raise SaveFileError(f"{path!r}: the header is unreadable ({exc}); the file is corrupt") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise SaveFileError(
            f"{path!r}: the header does not describe an fxsnn network (format {header.get('format') if isinstance(header, dict) else None!r})"
        )
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise SaveFileError(
            f"{path!r} was written by fxsnn {header.get('fxsnn_version', '?')} in file format {version!r}; this fxsnn "
            f"({__version__}) reads format {FORMAT_VERSION}. Upgrade fxsnn (pip install -U fxsnn), or re-save the "
            "network with this version"
        )
    return header


def load(path: str | os.PathLike, *, map_location=None) -> nn.Module:
    """Read a network written by :func:`save`: structure, buffers, Δb, ``T`` and mode, as saved.

    ``map_location`` is passed to ``torch.load`` (e.g. ``"cpu"`` for a network
    saved on a GPU). Raises :class:`SaveFileError` for a foreign, corrupt or
    too-new file (before unpickling) and when a class the network needs cannot
    be imported. See the module docstring on security: load trusted files only.
    """
    path = os.fspath(path)
    with _open(path) as zf:
        header = _header(zf, path)
        try:
            payload = zf.read(_PAYLOAD)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise SaveFileError(f"{path!r}: the network data is unreadable ({exc}); the file is corrupt") from None
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise SaveFileError(
            f"{path!r}: the network data does not match its checksum; the file is corrupt. Re-create it with fxsnn.save"
        )
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=False)
    except (ModuleNotFoundError, AttributeError, ImportError) as exc:
        raise SaveFileError(
            f"{path!r} needs a class that cannot be imported here ({exc}). Import or install the package that "
            "defines the model's modules before fxsnn.load (classes defined in a script's __main__ must move to a module)"
        ) from exc
    except RuntimeError as exc:
        hint = " Pass map_location='cpu' to load a network saved on a GPU." if "cuda" in str(exc).lower() else ""
        saved = header.get("torch_version")
        if saved and saved != torch.__version__:
            hint += f" It was written with torch {saved}; this is torch {torch.__version__}."
        raise SaveFileError(f"{path!r}: torch could not rebuild the network: {exc}.{hint}") from exc
    gm = state.get("module") if isinstance(state, dict) else None
    if not isinstance(gm, nn.Module):
        raise SaveFileError(f"{path!r} holds no network (found {type(state).__name__}); re-create it with fxsnn.save")
    if isinstance(state.get("meta"), dict) and isinstance(getattr(gm, "meta", None), dict):
        gm.meta.update(state["meta"])
    gm.training = bool(state.get("training", False))  # the root only: submodules kept their own flags
    return gm
