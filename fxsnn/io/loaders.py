"""Turn command-line style descriptions into objects: a model spec, a weights file, a data file or folder.

Used by the ``fxsnn`` command line; usable from Python too. Every failure is
an :class:`InputError` (or ``FileNotFoundError``) whose message names the
problem and the fix, in terms of the loader's own arguments (``nhwc=True``); the
command line adds its flags.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from ..errors import FxsnnError

if TYPE_CHECKING:
    from torchvision.datasets import ImageFolder

_Norm = tuple[torch.Tensor, torch.Tensor]  # per-channel (mean, std)

__all__ = [
    "InputError",
    "load_model",
    "load_weights",
    "load_data",
    "parse_kwargs",
    "OnDevice",
    "NORMALIZE_PRESETS",
    "input_channels",
    "DataSummary",
    "data_summary",
]

#: ``normalize=`` presets: per-channel (mean, std) of pixels in [0, 1].
NORMALIZE_PRESETS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


class InputError(FxsnnError, ValueError):
    """A model spec, weights file or data source that cannot be used as given.

    ``arguments`` names the keyword arguments of the loader at fault (``("nhwc",)``), empty when the problem is
    the file or the spec itself; the command line maps them to its flags.
    """

    def __init__(self, message: str, *, arguments: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.arguments = tuple(arguments)


def parse_kwargs(items: Sequence[str]) -> dict[str, Any]:
    """``["depth=20", "name='x'"]`` → ``{"depth": 20, "name": "x"}`` (values via ``ast.literal_eval``, else strings)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise InputError(f"model argument {item!r} is not of the form NAME=VALUE (e.g. depth=20)")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


# -- models -------------------------------------------------------------------------------
def load_model(spec: str, **kwargs: Any) -> nn.Module:
    """Build a model from ``"package.module:function"`` (or a class / instance there) or a torchvision model name.

    ``kwargs`` go to the function or class (torchvision: to
    ``torchvision.models.get_model``, always with ``weights=None``; load weights
    with :func:`load_weights`).

    Example::

        >>> load_model("fxsnn.models:cifar_resnet", depth=20)
        >>> load_model("resnet18", num_classes=10)
    """
    if not isinstance(spec, str) or not spec:
        raise InputError(f"model spec must be 'package.module:function' or a torchvision model name; got {spec!r}")
    model = _model_from_spec(spec, kwargs) if ":" in spec else _torchvision_model(spec, kwargs)
    if not isinstance(model, nn.Module):
        raise InputError(f"{spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _model_from_spec(spec: str, kwargs: dict[str, Any]) -> object:
    """``"package.module:attr.path"``: the instance there, or what calling it with ``kwargs`` returns."""
    module_name, _, attr = spec.partition(":")
    obj = _attribute(_import_module(module_name, spec), module_name, attr)
    if isinstance(obj, nn.Module):
        if kwargs:
            raise InputError(f"{spec!r} is a model instance; it takes no model arguments (got {sorted(kwargs)})")
        return obj
    if not callable(obj):
        raise InputError(f"{spec!r} is a {type(obj).__name__}, not a function, class or nn.Module")
    try:
        return obj(**kwargs)
    except TypeError as exc:
        raise InputError(
            f"calling {spec}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) failed: {exc}"
        ) from None


def _import_module(module_name: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise InputError(
            f"cannot import module {module_name!r} of model spec {spec!r} ({exc}); check the spelling, install the "
            "package, or run from the directory that contains it (or add it to PYTHONPATH)"
        ) from None
    except Exception as exc:  # the user's module raised while importing
        raise InputError(
            f"importing {module_name!r} for model spec {spec!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _attribute(module: ModuleType, module_name: str, attr: str) -> object:
    """``module.<attr>`` for a dotted ``attr``; the error suggests close names."""
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
            close = difflib.get_close_matches(part, public, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; it defines: {', '.join(public[:12])}"
            raise InputError(f"module {module_name!r} has no attribute {attr!r}{hint}")
        obj = getattr(obj, part)
    return obj


def _torchvision_model(spec: str, kwargs: dict[str, Any]) -> nn.Module:
    import torchvision

    names = torchvision.models.list_models()
    if spec not in names:
        close = difflib.get_close_matches(spec, names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise InputError(
            f"unknown model {spec!r}: give 'package.module:function' or a torchvision model name "
            f"(torchvision.models.list_models()).{hint}"
        )
    return torchvision.models.get_model(spec, weights=None, **kwargs)


# -- weights ------------------------------------------------------------------------------
def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a state dict file into ``model`` (in place; returns it).

    Accepts ``torch.save(model.state_dict())`` files, and checkpoints holding
    the state dict under ``"state_dict"`` or ``"model"``; a ``module.`` prefix
    (DataParallel) is stripped. Read with ``weights_only=True``: tensors only,
    no code is run. Keys and shapes must match the model exactly.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist")
    state = {k.removeprefix("module."): v for k, v in _read_state_dict(path).items()}
    _check_state_dict(model, state, path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"the weights in {path!r} do not match the model {type(model).__name__}: {exc}") from None
    return model


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The dict of tensors in ``path`` (the file itself, or its ``"state_dict"`` / ``"model"`` entry)."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated file, not a torch file
        raise InputError(
            f"cannot read weights from {path!r} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "it must be a state dict saved with torch.save(model.state_dict(), path)"
        ) from None
    if isinstance(blob, dict):
        for key in ("state_dict", "model"):
            if isinstance(blob.get(key), dict):
                blob = blob[key]
                break
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise InputError(
            f"{path!r} does not hold a state dict (a dict of tensors); save one with torch.save(model.state_dict(), path)"
        )
    return blob


def _check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Raise, counting and naming a few, unless ``state`` has exactly the keys and shapes of ``model``."""
    own = model.state_dict()
    # BatchNorm fills in a missing num_batches_tracked itself (checkpoints from before torch 0.4.1 lack it)
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        parts.append(f"{len(shapes)} of another shape (e.g. {'; '.join(shapes[:2])})")
    if parts:
        raise InputError(
            f"the weights in {path!r} do not match the model {type(model).__name__}: {'; '.join(parts)}. "
            "Check the model spec and its arguments (e.g. num_classes)"
        )


# -- data ---------------------------------------------------------------------------------
class OnDevice:
    """A re-iterable view of a DataLoader whose batches are moved to ``device`` (and floats to ``dtype``)."""

    def __init__(self, loader: Iterable, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> None:
        self.loader, self.device, self.dtype = loader, torch.device(device), dtype

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple]:
        for batch in self.loader:
            out = []
            for t in batch:
                if isinstance(t, torch.Tensor):
                    t = t.to(self.device, dtype=self.dtype if (self.dtype and t.is_floating_point()) else None)
                out.append(t)
            yield tuple(out)


def _read_npz(path: str, *, labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Arrays ``x`` and ``y`` of an ``.npz`` file (no pickles), checked: same length, not empty, integer 1-D ``y``.

    ``labels=False``: ``y`` may be absent (then ``None``).
    """
    try:
        with np.load(path, allow_pickle=False) as d:
            keys = sorted(d.files)
            if "x" not in keys or ("y" not in keys and labels):
                raise InputError(
                    f"data file {path!r} must hold arrays named 'x' (inputs) and 'y' (integer labels); it has "
                    f"{keys or 'no arrays'}. Write one with numpy.savez(path, x=inputs, y=labels)"
                    + (
                        " (labels are needed by a stage with objective='labels'; a label-free conversion, "
                        "stage1.objective=distill and stage2.objective=distill, takes x alone)"
                        if "x" in keys
                        else ""
                    )
                )
            x, y = d["x"], (d["y"] if "y" in keys else None)
    except InputError:
        raise
    except Exception as exc:  # not a zip, truncated, object arrays
        raise InputError(f"cannot read {path!r} as a numpy .npz file ({type(exc).__name__}: {exc})") from None
    if y is None:
        if len(x) == 0:
            raise InputError(f"data file {path!r} holds no samples")
        return x, None
    if len(x) != len(y):
        raise InputError(f"data file {path!r}: x has {len(x)} samples but y has {len(y)}")
    if len(x) == 0:
        raise InputError(f"data file {path!r} holds no samples")
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise InputError(
            f"data file {path!r}: y must be a 1-D array of integer class labels; got {y.dtype} of shape {y.shape}"
        )
    return x, y


class _Notes:
    """Where the loaders say what they detected: ``note`` (a choice made for the user) and ``warn`` (a likely
    mistake), each naming the argument that changes it as the caller spells it (``spell(name, value)``)."""

    def __init__(self, report: Callable[[str, str], None] | None, spell: Callable[..., str] | None) -> None:
        self.report, self.spell = report, spell or _python_spelling

    def __call__(self, level: str, text: str) -> None:
        if self.report is not None:
            self.report(level, text)
        else:  # attributed to the first caller outside this module
            level, frame = 2, sys._getframe(1)
            while frame is not None and frame.f_globals.get("__name__") == __name__:
                level, frame = level + 1, frame.f_back
            warnings.warn(f"fxsnn.io.load_data: {text}", UserWarning, stacklevel=level)


def _python_spelling(name: str, value: object = ...) -> str:
    return name if value is ... else f"{name}={value!r}"


def _channels_last(shape: tuple[int, ...], nhwc: bool | None, channels: int | None, say: _Notes) -> bool:
    """Whether ``x`` of ``shape`` is ``[N, H, W, C]``: ``nhwc`` when given, else detected (and said)."""
    if nhwc is not None:
        if nhwc and len(shape) != 4:
            raise InputError(f"nhwc=True needs 4-D images [N, H, W, C]; x has shape {shape}", arguments=("nhwc",))
        return bool(nhwc)
    if len(shape) != 4 or shape[1] == shape[-1]:
        return False
    off = f"{say.spell('nhwc', False)} if it is not"
    if channels is not None:
        if shape[-1] == channels and shape[1] != channels:
            say(
                "note",
                f"x has shape {list(shape)} and the model takes {channels} input channels: read as channels-last "
                f"[N, H, W, C] and permuted to [N, C, H, W] ({off})",
            )
            return True
        if shape[1] != channels:
            say(
                "warning",
                f"x has shape {list(shape)} but the model's first convolution takes {channels} input channels, "
                f"neither dim 1 nor the last dim; kept as it is ({say.spell('nhwc', True)} / "
                f"{say.spell('nhwc', False)} choose the layout)",
            )
        return False
    if shape[-1] in (1, 3, 4) and shape[1] not in (1, 3, 4):
        say(
            "note",
            f"x has shape {list(shape)}: guessed channels-last [N, H, W, C] (the last dim is {shape[-1]}, dim 1 is "
            f"{shape[1]}; the model's input channels are not known) and permuted to [N, C, H, W] ({off}; "
            f"{say.spell('nhwc', True)} to force it)",
        )
        return True
    return False


def _npz_tensors(
    path: str, *, nhwc: bool | None, scale: float | None, channels: int | None, say: _Notes, labels: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``x`` as float32 ``[N, C, ...]`` (uint8 divided by 255 unless ``scale`` is given; layout detected unless
    ``nhwc`` is given) and ``y`` as int64 (``None`` when absent and not ``labels``)."""
    x, y = _read_npz(path, labels=labels)
    xt = torch.from_numpy(np.ascontiguousarray(x)).float()
    if not bool(torch.isfinite(xt).all()):
        bad = (
            int((~torch.isfinite(xt)).flatten(1).any(dim=1).sum()) if xt.dim() > 1 else int((~torch.isfinite(xt)).sum())
        )
        raise InputError(
            f"data file {path!r}: x holds NaN or ±Inf (in {bad} of {len(xt)} samples, or beyond float32's range); "
            "remove or repair those samples before converting"
        )
    if _channels_last(tuple(x.shape), nhwc, channels, say):
        xt = xt.permute(0, 3, 1, 2).contiguous()
    if scale is not None:
        xt = xt * scale
    elif x.dtype == np.uint8:
        xt = xt.div_(255)
        say("note", f"x is uint8 (0..255): divided by 255 to [0, 1] ({say.spell('scale', 1.0)} keeps 0..255)")
    return xt, (None if y is None else torch.from_numpy(y.astype(np.int64)))


def _image_folder(path: str, image_size: int | None) -> ImageFolder:
    from torchvision import datasets, transforms

    steps = []
    if image_size:
        steps += [transforms.Resize(image_size), transforms.CenterCrop(image_size)]
    steps.append(transforms.ToTensor())
    try:
        return datasets.ImageFolder(path, transform=transforms.Compose(steps))
    except (FileNotFoundError, RuntimeError) as exc:
        exts = ", ".join(datasets.folder.IMG_EXTENSIONS)
        first = str(exc).split(". ")[0]
        raise InputError(
            f"found no images under {path!r} ({first}). An image folder holds one subfolder per class with the images "
            f"inside (DIR/cat/001.png, DIR/dog/002.jpg); accepted extensions: {exts}"
        ) from None


def load_data(
    path: str | os.PathLike,
    *,
    batch_size: int = 64,
    limit: int | None = None,
    nhwc: bool | None = None,
    scale: float | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    normalize: str | None = None,
    image_size: int | None = None,
    random_subset: bool = False,
    channels: int | None = None,
    report: Callable[[str, str], None] | None = None,
    spell: Callable[..., str] | None = None,
    labels: bool = True,
) -> DataLoader:
    """A DataLoader of ``(x, y)`` batches from an ``.npz`` file (arrays ``x``, ``y``) or an image folder.

    ``.npz``: ``x`` ``[N, ...]`` is used as float32, ``y`` ``[N]`` integer labels; NaN/±Inf in ``x`` are refused.
    With ``labels=False`` a file without ``y`` is accepted and gives ``(x,)`` batches (label-free calibration).

    - layout: ``nhwc=True`` permutes ``[N, H, W, C] → [N, C, H, W]``, ``nhwc=False`` keeps ``x`` as it is;
      ``None`` (default) detects channels-last 4-D ``x``: when ``channels`` (the model's input channels, see
      :func:`input_channels`) is known, ``x`` is channels-last iff its last dim equals ``channels`` and dim 1
      does not; otherwise by the heuristic "last dim in {1, 3, 4} and dim 1 not".
    - scale: ``x`` times ``scale`` when given; ``None`` (default): uint8 ``x`` is divided by 255 (to [0, 1]),
      any other dtype is kept.

    A directory is read with ``torchvision.datasets.ImageFolder`` (``image_size``: resize + centre crop; pixels
    in [0, 1]). Then ``(x − mean)/std`` per channel: ``mean``/``std`` (finite, ``std`` > 0), or ``normalize``
    = ``"imagenet"`` / ``"cifar10"`` (:data:`NORMALIZE_PRESETS`) or ``"none"`` (no normalisation, and no
    warning). Then the first ``limit`` samples (with ``random_subset``, ``limit`` samples drawn by a fixed
    permutation, seed 0: for files sorted by class). Batches are not shuffled.

    What was detected is reported as ``report("note", text)``, and inputs that look unnormalised (every value
    in [0, 1] or in [0, 255], with no normalisation given) as ``report("warning", text)``; each text names the
    argument that changes it, spelled by ``spell(name, value)`` (default ``name=value``; the command line
    passes its flags). Without ``report`` both become ``UserWarning`` warnings.
    """
    path = os.fspath(path)
    say = _Notes(report, spell)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1; got {batch_size}", arguments=("batch_size",))
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"data {path!r} does not exist; give an .npz file with arrays x and y, or an image folder"
        )
    norm = _normalisation(mean, std, normalize)
    if os.path.isdir(path):
        ds = _folder_dataset(path, image_size=image_size, scale=scale, norm=norm)
        if norm is None and normalize != "none":
            _warn_unnormalised(0.0, 1.0, "the images are read as pixels in [0, 1]", say)
    elif path.endswith(".npz"):
        preset = normalize if normalize in NORMALIZE_PRESETS else None
        ds = _npz_dataset(
            path, nhwc=nhwc, scale=scale, norm=norm, preset=preset, channels=channels, say=say, labels=labels
        )
        if norm is None and normalize != "none":
            x = ds.tensors[0]
            _warn_unnormalised(float(x.min()), float(x.max()), "x", say)
    else:
        raise InputError(f"unknown data format {path!r}: give an .npz file with arrays x and y, or an image folder")
    return DataLoader(_first(ds, limit, random_subset=random_subset), batch_size=batch_size, shuffle=False)


def _warn_unnormalised(lo: float, hi: float, what: str, say: _Notes) -> None:
    """Warn when every input lies in [0, 1] or in [0, 255] and no normalisation was given."""
    if lo < 0 or hi > 255:
        return
    where = "[0, 1]" if hi <= 1 else "[0, 255]"
    scale = f"; {say.spell('scale', 1 / 255)} maps 0..255 to [0, 1]" if hi > 1 else ""
    presets = " or ".join(say.spell("normalize", k) for k in NORMALIZE_PRESETS)
    say(
        "warning",
        f"{what} lies in {where} (min {lo:g}, max {hi:g}) and no normalisation was given: most trained networks "
        f"expect normalised inputs. Give {presets} or {say.spell('mean')}/{say.spell('std')}{scale}; "
        f"{say.spell('normalize', 'none')} if the model takes these values as they are",
    )


def _normalisation(
    mean: Sequence[float] | None, std: Sequence[float] | None, preset: str | None = None
) -> _Norm | None:
    if preset is not None:
        if preset != "none" and preset not in NORMALIZE_PRESETS:
            raise InputError(
                f"normalize must be one of {', '.join(NORMALIZE_PRESETS)} or none; got {preset!r}",
                arguments=("normalize",),
            )
        if mean is not None or std is not None:
            raise InputError(f"give normalize={preset!r} or mean/std, not both", arguments=("normalize", "mean", "std"))
        if preset == "none":
            return None
        mean, std = NORMALIZE_PRESETS[preset]
    if mean is None and std is None:
        return None
    if mean is None or std is None or len(mean) != len(std):
        raise InputError("give mean and std together, with one value per channel each", arguments=("mean", "std"))
    m, s = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
    if not bool(torch.isfinite(m).all()):
        raise InputError(f"mean must be finite numbers; got {list(mean)}", arguments=("mean",))
    if not bool((torch.isfinite(s) & (s > 0)).all()):
        raise InputError(
            f"std must be finite and > 0 for every channel (x is divided by it); got {list(std)}", arguments=("std",)
        )
    return m, s


def _folder_dataset(path: str, *, image_size: int | None, scale: float | None, norm: _Norm | None) -> Dataset:
    ds = _image_folder(path, image_size)
    if scale is not None and scale != 1.0:
        raise InputError("scale applies to .npz data; image folders are read as pixels in [0, 1]", arguments=("scale",))
    if norm is not None:
        from torchvision import transforms

        ds.transform = transforms.Compose([ds.transform, transforms.Normalize(*norm)])
    return ds


def _npz_dataset(
    path: str,
    *,
    nhwc: bool | None,
    scale: float | None,
    norm: _Norm | None,
    preset: str | None,
    channels: int | None,
    say: _Notes,
    labels: bool = True,
) -> TensorDataset:
    x, y = _npz_tensors(path, nhwc=nhwc, scale=scale, channels=channels, say=say, labels=labels)
    if norm is not None:
        if x.dim() < 2 or x.shape[1] != len(norm[0]):
            given = f"normalize={preset!r} gives" if preset else "mean/std give"
            raise InputError(
                f"{given} {len(norm[0])} channels but x has shape {tuple(x.shape)} (channels in dim 1)",
                arguments=("normalize",) if preset else ("mean", "std"),
            )
        view = (1, -1) + (1,) * (x.dim() - 2)
        x = (x - norm[0].view(view)) / norm[1].view(view)
    return TensorDataset(x) if y is None else TensorDataset(x, y)


def _first(ds: Dataset, limit: int | None, *, random_subset: bool) -> Dataset:
    """The first ``limit`` samples of ``ds`` (all for ``None``), or ``limit`` drawn by a fixed permutation."""
    if limit is None:
        return ds
    if limit < 1:
        raise InputError(f"limit must be >= 1; got {limit}", arguments=("limit",))
    if random_subset:
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:limit].tolist()
    else:
        idx = range(min(limit, len(ds)))
    return Subset(ds, idx)


def input_channels(model: nn.Module) -> int | None:
    """The input channels of ``model``'s first convolution (module registration order), ``None`` without one.

    Used by :func:`load_data` (``channels=``) to tell ``[N, C, H, W]`` from ``[N, H, W, C]`` data.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return int(m.in_channels)
    return None


@dataclass(frozen=True)
class DataSummary:
    """What a :func:`load_data` loader holds.

    ``used`` of ``total`` samples, chosen by ``selection`` (``"all"``, ``"first"`` or ``"random"``);
    ``classes``: distinct labels among the used samples; ``label_range``: ``max label + 1`` over the whole
    source (the used samples and the rest); ``labelled``: whether the data has labels at all (both counts are 0
    when not).
    """

    used: int
    total: int
    selection: str
    classes: int
    label_range: int
    labelled: bool = True


def _labels(ds: Dataset) -> torch.Tensor | None:
    if isinstance(ds, Subset):
        every = _labels(ds.dataset)
        return None if every is None else every[torch.as_tensor(list(ds.indices), dtype=torch.long)]
    if isinstance(ds, TensorDataset):
        return ds.tensors[1] if len(ds.tensors) > 1 else None
    return torch.as_tensor(ds.targets, dtype=torch.long)  # ImageFolder


def data_summary(loader: DataLoader) -> DataSummary:
    """The :class:`DataSummary` of a loader made by :func:`load_data` (labels only: no image is read)."""
    ds = loader.dataset
    source = ds.dataset if isinstance(ds, Subset) else ds
    every, used = _labels(source), _labels(ds)
    if not isinstance(ds, Subset) or len(ds) == len(source):  # a limit of at least every sample takes them all
        selection = "all"
    else:
        selection = "first" if list(ds.indices) == list(range(len(ds.indices))) else "random"
    if every is None:
        return DataSummary(len(ds), len(source), selection, 0, 0, labelled=False)
    label_range = int(every.max()) + 1 if every.numel() else 0
    return DataSummary(len(used), len(every), selection, int(torch.unique(used).numel()), label_range)
