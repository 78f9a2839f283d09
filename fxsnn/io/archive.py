"""The container of a ``.fxsnn`` file: a stored (uncompressed) zip with a JSON header and a safetensors blob.

Nothing here unpickles or executes anything: the header is ``json.loads``, the
tensors are parsed by ``safetensors`` (a flat, typed layout with no code).
Writes go to a temporary file created exclusively in the target directory
(``tempfile.mkstemp``: ``O_CREAT | O_EXCL``, a fresh unpredictable name) and
replace the target atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile

from ..errors import FxsnnError

__all__ = ["SaveFileError", "FORMAT", "FORMAT_VERSION", "write_archive", "read_archive", "write_atomic"]

FORMAT = "fxsnn.network"
#: Bumped whenever a file written now could not be read back by an older fxsnn. 1 was the pickle format.
FORMAT_VERSION = 2
HEADER, TENSORS, OLD_PAYLOAD = "fxsnn.json", "tensors.safetensors", "model.pt"
_MAX_HEADER = 64 << 20  # bytes of JSON; a real header is kilobytes


class SaveFileError(FxsnnError, ValueError):
    """A file given to :func:`fxsnn.load` is not a usable fxsnn network (corrupt, foreign, forged, too new or too old)."""


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through an exclusively created temporary file in the same directory.

    A failure (disk full, permission) leaves ``path`` as it was and no temporary file behind.
    """
    parent = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise


def write_archive(path: str, header: dict, tensors: bytes) -> None:
    """Write the archive: ``header`` (with the SHA-256 of ``tensors`` added) and the tensor blob."""
    import io

    header = {**header, "sha256": hashlib.sha256(tensors).hexdigest(), "bytes": len(tensors)}
    text = json.dumps(header, indent=1, sort_keys=True, allow_nan=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(HEADER, text)
        zf.writestr(TENSORS, tensors)
    write_atomic(path, buf.getvalue())


def _open(path: str) -> zipfile.ZipFile:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    if os.path.isdir(path):
        raise SaveFileError(f"{path!r} is a directory; give the file written by fxsnn.save")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise SaveFileError(
            f"{path!r} is not an fxsnn network file (not a readable archive: {exc}); it may be truncated or corrupt, "
            "or written by something else. Re-create it with fxsnn.save(gm, path)"
        ) from None


def _member(zf: zipfile.ZipFile, name: str, path: str, limit: int) -> bytes:
    info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size or info.file_size > limit:
        raise SaveFileError(
            f"{path!r}: member {name!r} is compressed or larger than the file ({info.file_size} bytes); fxsnn writes "
            "stored members only, so this file was not written by fxsnn.save. Re-create it with fxsnn.save"
        )
    try:
        data = zf.read(name)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
        raise SaveFileError(f"{path!r}: {name} is unreadable ({exc}); the file is corrupt") from None
    return data


def _old_format(path: str, header: dict) -> SaveFileError:
    wrote = header.get("fxsnn_version") if isinstance(header.get("fxsnn_version"), str) else "an older version"
    return SaveFileError(
        f"{path!r} is in fxsnn's old pickle format (file format 1, written by fxsnn {wrote}), which can run code "
        "when loaded, so this fxsnn refuses it. If you trust the file, re-save it: load it where you accept that "
        "risk (with the fxsnn that wrote it, or here with gm = torch.load(io.BytesIO(zipfile.ZipFile(path)"
        ".read('model.pt')), weights_only=False)['module']), then save it again with this fxsnn: "
        "fxsnn.save(gm, new_path); load the new file with fxsnn.load(new_path, model=ann)"
    )


def _parse_header(raw: bytes, path: str) -> dict:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise SaveFileError(f"{path!r}: the header is unreadable ({type(exc).__name__}); the file is corrupt") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise SaveFileError(f"{path!r}: the header does not describe an fxsnn network (format {found!r})")
    return header


def _check_version(header: dict, path: str, names: set) -> None:
    from .._version import __version__

    version = header.get("format_version")
    if version == 1 or (OLD_PAYLOAD in names and TENSORS not in names):
        raise _old_format(path, header)
    if isinstance(version, bool) or not isinstance(version, int) or not 2 <= version <= FORMAT_VERSION:
        wrote = header.get("fxsnn_version", "?")
        raise SaveFileError(
            f"{path!r} was written by fxsnn {wrote!s:.40} in file format {version!r:.40}; this fxsnn ({__version__}) "
            f"reads format {FORMAT_VERSION}. Upgrade fxsnn (pip install -U fxsnn), or re-save the network with "
            "this version"
        )


def read_archive(path: str, *, tensors: bool = True) -> tuple[dict, bytes | None]:
    """``(header dict, tensor blob or None)``, after the format, version, member and checksum checks."""
    with _open(path) as zf:
        names = set(zf.namelist())
        if HEADER not in names:
            hint = (
                " (it looks like a torch.save file: use torch.load)"
                if any(n.endswith("data.pkl") for n in names)
                else ""
            )
            raise SaveFileError(f"{path!r} is not an fxsnn network file: it has no {HEADER} header{hint}")
        size = os.path.getsize(path)
        header = _parse_header(_member(zf, HEADER, path, min(size, _MAX_HEADER)), path)
        _check_version(header, path, names)
        extra = sorted(names - {HEADER, TENSORS})
        if extra or TENSORS not in names:
            what = f"unexpected member {extra[0]!r}" if extra else f"no {TENSORS}"
            raise SaveFileError(f"{path!r}: the archive has {what}; it was not written by fxsnn.save")
        if not tensors:
            return header, None
        blob = _member(zf, TENSORS, path, size)
    if hashlib.sha256(blob).hexdigest() != header.get("sha256") or len(blob) != header.get("bytes"):
        raise SaveFileError(
            f"{path!r}: the tensor data does not match its checksum; the file is corrupt. Re-create it with fxsnn.save"
        )
    return header, blob
