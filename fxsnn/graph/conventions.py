"""QCFS activations a user's model already contains: the conventions fxsnn reads them by (a small registry).

A *QCFS-trained backbone* (the paper's Table 1 path) has a QCFS activation (Bu et al., 2022) wherever an
off-the-shelf network has a ReLU::

    a = θ/L · clip(⌊x·L/θ + φ⌋, 0, L)          (Eq. 2 with ψ = φ·θ; φ = ½ is the QCFS shift)

written in the public code bases as ``x / θ → ⌊x·L + ½⌋ / L → clamp(·, 0, 1) → · θ``. Such a module is an
activation site that needs no recorder: θ, L and φ are already in the module. A :class:`QCFSConvention` says
how to read them; :func:`register_qcfs` declares a user's class, and three built-in conventions cover the
public code (matched by class name and attributes, then checked on a probe input, see below):

- ``MyFloor(up, t)`` of the QCFS code (Bu et al., 2022, github.com/putshua/SNN_conversion_QCFS): a learnable
  ``up`` (``nn.Parameter`` of shape ``[1]``) is θ, ``t`` is L; ``x/up``, ``⌊x·t + 0.5⌋/t``, clamp to [0, 1], ``·up``.
- ``IF(T, L, thresh)`` of the later ANN_SNN_QCFS code (github.com/putshua/ANN_SNN_QCFS, ``Models/layer.py``): ``thresh`` (``[1]``) is θ, ``L`` is L; a QCFS only while
  ``T == 0`` (its ANN mode; with ``T > 0`` it is a serial IF neuron and no site).
- ``QCFS(in_ch, up, t)`` of the FS-PC code (Hao et al., 2025, "Faster and Stronger"; ``modules.py``, read in the
  copy github.com/bjourne/hao_s2025): ``up`` (a ``[1]``
  parameter, or a ``[C, 1, 1]`` buffer) is θ, ``t`` is L; with ``cab_inf`` set it is their calibrated DA-QCFS
  (Eq. 4: ``rec_in_mean`` is ψ_DA, ``rec_th_mean`` is φ_DA); while ``is_cab`` is set (their calibration pass,
  which doubles the batch) it is no activation fxsnn can read and no site.

**The probe.** A module matches a convention only if it *computes* it: on a probe input of a few values per
channel, two inside each quantisation bin of every channel (a quarter of a bin from either edge; bins below 0
and above θ too), its output equals
``θ/L · clip(⌊(x + ψ_DA)·L/θ + φ⌋, 0, L)`` (``(θ + φ_DA)/L · ...`` with DA terms) to float rounding. The
probe values sit well inside the bins, so the different order in which a user's code rounds (``x/θ·L`` against fxsnn's
``(x·L + θ/2)/θ``) cannot change the bin; on real inputs the two can differ by one level where a value falls
within a rounding error of a bin edge (fxsnn's own :class:`fxsnn.nn.QCFS` computes the same expression as the
spiking neurons, so it reproduces them bit for bit). A module of a built-in convention's class name that fails
the probe is no site (with a warning): it is traced through as any module, or stays an opaque module where it
is a leaf, as without this registry; a *registered* class that fails it raises
:class:`fxsnn.ConversionError` (its declaration is wrong).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import ConversionError

__all__ = ["QCFSConvention", "QCFSReading", "register_qcfs", "unregister_qcfs", "qcfs_reading", "BUILTIN"]

Reader = str | Callable[[nn.Module], object]


@dataclass(frozen=True)
class QCFSConvention:
    """How to read a QCFS-like module: ``a = θ/L · clip(⌊(x + ψ_DA)·L/θ + φ⌋, 0, L)`` (Eq. 2; Eq. 4 with DA terms).

    Attributes:
        name: what the convention is called in messages and site kinds.
        theta: θ: an attribute name (``"up"``) or ``module -> Tensor``; a scalar / ``[1]`` tensor (one θ for
            the layer, broadcast per channel) or ``C`` values (``[C]``, ``[C, 1, 1]``, ``[1, C, 1, 1]``).
        levels: L: an attribute name (``"t"``), a fixed int, or ``module -> int``.
        shift: φ, the shift inside the floor (QCFS: ``0.5``): a number in ``[0, 1)``, an attribute name or
            ``module -> float``.
        when: ``module -> bool``: the module is in its QCFS mode (``None``: always).
        psi_da, phi_da: optional DA terms (Eq. 4), attribute names or ``module -> Tensor`` (``None``: none).
    """

    name: str
    theta: Reader
    levels: Reader | int
    shift: Reader | float = 0.5
    when: Callable[[nn.Module], bool] | None = None
    psi_da: Reader | None = None
    phi_da: Reader | None = None


@dataclass(frozen=True)
class QCFSReading:
    """What a QCFS-like module holds, read by its :class:`QCFSConvention`.

    Attributes:
        convention: the convention's name.
        theta: θ as stored (its own shape: ``[1]``, ``[C]``, ``[C, 1, 1]``, ...), detached.
        levels: L.
        shift: φ.
        psi_da, phi_da: the DA terms as stored, or ``None``.
    """

    convention: str
    theta: Tensor
    levels: int
    shift: float
    psi_da: Tensor | None = None
    phi_da: Tensor | None = None

    def vector(self, t: Tensor | None, channels: int | None) -> Tensor | None:
        """``t`` (θ or a DA term) as a ``[C]`` vector: one value per channel broadcast to ``channels``."""
        if t is None:
            return None
        v = t.detach().reshape(-1)
        return v.expand(channels).clone() if v.numel() == 1 and channels else v.clone()


def _fspc_plain(m: nn.Module) -> bool:
    return not getattr(m, "is_cab", False) and not getattr(m, "cab_inf", False)


def _fspc_calibrated(m: nn.Module) -> bool:
    return not getattr(m, "is_cab", False) and getattr(m, "cab_inf", False) is True


#: class name -> the conventions of the public code (tried in order; the first that reads and probes wins)
BUILTIN: dict[str, tuple[QCFSConvention, ...]] = {
    "MyFloor": (QCFSConvention("QCFS code MyFloor(up, t)", theta="up", levels="t"),),
    "IF": (QCFSConvention("ANN_SNN_QCFS IF(L, thresh), T == 0", "thresh", "L", when=lambda m: m.T == 0),),
    "QCFS": (
        QCFSConvention("FS-PC QCFS(up, t)", theta="up", levels="t", when=_fspc_plain),
        QCFSConvention(
            "FS-PC QCFS(up, t), calibrated (cab_inf)",
            theta="up",
            levels="t",
            when=_fspc_calibrated,
            psi_da="rec_in_mean",
            phi_da="rec_th_mean",
        ),
    ),
}
_REGISTERED: dict[type, QCFSConvention] = {}


def register_qcfs(
    cls: type,
    *,
    theta: Reader,
    levels: Reader | int,
    shift: Reader | float = 0.5,
    when: Callable[[nn.Module], bool] | None = None,
    name: str | None = None,
) -> QCFSConvention:
    """Declare a user's QCFS-like ``nn.Module`` class: its instances (and its subclasses') become activation sites.

    ``theta`` / ``levels`` / ``shift`` / ``when``: see :class:`QCFSConvention`. Registering a class again
    replaces its convention. A registered module is checked on a probe input whenever it is read
    (:func:`qcfs_reading`); a module that does not compute ``θ/L · clip(⌊x·L/θ + φ⌋, 0, L)`` then raises
    :class:`fxsnn.ConversionError`.

    Example::

        >>> fxsnn.graph.patterns.register_qcfs(MyQuant, theta="alpha", levels="n_levels", shift=0.5)
        >>> fxsnn.find_sites(fxsnn.trace(model))  # every MyQuant is a site, kind 'QCFS-like MyQuant'
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_qcfs: cls must be an nn.Module subclass; got {cls!r}")
    if cls.__module__.startswith("fxsnn."):
        raise ValueError(f"register_qcfs: {cls.__name__} is fxsnn's own class; it is a site already")
    for what, reader in (("theta", theta), ("levels", levels)):
        if not (isinstance(reader, str) or callable(reader) or (what == "levels" and isinstance(reader, int))):
            raise TypeError(f"register_qcfs: {what} must be an attribute name or a callable; got {reader!r}")
    if isinstance(shift, (int, float)) and not 0.0 <= float(shift) < 1.0:
        raise ValueError(f"register_qcfs: shift must be in [0, 1); got {shift}")
    conv = QCFSConvention(name or f"registered {cls.__name__}", theta, levels, shift, when)
    _REGISTERED[cls] = conv
    return conv


def unregister_qcfs(cls: type) -> None:
    """Forget a class declared with :func:`register_qcfs` (a no-op for a class that is not registered)."""
    _REGISTERED.pop(cls, None)


def _read(m: nn.Module, reader):
    return getattr(m, reader) if isinstance(reader, str) else reader(m) if callable(reader) else reader


def _as_tensor(v) -> Tensor:
    t = torch.as_tensor(v.detach() if isinstance(v, Tensor) else v)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t.detach()


def _conventions(m: nn.Module) -> tuple[tuple[QCFSConvention, ...], bool]:
    """``(conventions to try, registered?)`` for a module's class."""
    cls = type(m)
    if cls.__module__.startswith(("fxsnn.", "torch.")):
        return (), False
    for t in cls.__mro__:
        if t in _REGISTERED:
            return (_REGISTERED[t],), True
    return BUILTIN.get(cls.__name__, ()), False


def _reading(m: nn.Module, conv: QCFSConvention) -> QCFSReading:
    """Read θ, L, φ and the DA terms (AttributeError / TypeError / ValueError when the module does not have them)."""
    theta = _as_tensor(_read(m, conv.theta))
    levels = _read(m, conv.levels)
    shift = float(_read(m, conv.shift))
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels must be a positive int; got {levels!r}")
    if not 0.0 <= shift < 1.0:
        raise ValueError(f"shift must be in [0, 1); got {shift}")
    if theta.numel() == 0 or not bool(torch.isfinite(theta).all()) or not bool((theta > 0).all()):
        raise ValueError(f"every θ must be finite and > 0; got {theta.flatten()[:4].tolist()}")
    da = [None if r is None else _as_tensor(_read(m, r)) for r in (conv.psi_da, conv.phi_da)]
    return QCFSReading(conv.name, theta, levels, shift, *da)


def _probe_shapes(theta: Tensor) -> tuple[tuple[int, ...], ...]:
    """The per-sample shapes a probe tries for a θ of this shape (one channel per θ value): a ``[1, C, 1, 1]`` or
    ``[C, 1, 1]`` θ broadcasts over ``[C, H, W]``; a flat ``[C]`` (or one value) may be a ``[B, C]`` or a
    ``[B, C, H, W]`` layer's."""
    s = tuple(theta.shape)
    if len(s) >= 4 and s[0] == 1:  # [1, C, 1, 1]: stored with its batch dim
        s = s[1:]
    if len(s) <= 1:
        c = theta.numel()
        return (c,), (c, 1, 1)
    return (s,)


def _deviation(m: nn.Module, r: QCFSReading, shape: tuple[int, ...]) -> float:
    theta = r.theta.reshape(shape)
    psi, phi = (
        torch.zeros(()) if t is None else t.reshape(shape) if t.numel() > 1 else t for t in (r.psi_da, r.phi_da)
    )
    # bins k below 0 .. above L, two points in each: a quarter of a bin from either edge (before the DA shift)
    k = torch.arange(-2, r.levels + 3, dtype=theta.dtype, device=theta.device).repeat_interleave(2)
    offset = torch.tensor([0.25, 0.75], dtype=theta.dtype, device=theta.device).repeat(k.numel() // 2)
    k, offset = k.view((-1,) + (1,) * len(shape)), offset.view((-1,) + (1,) * len(shape))
    x = (k - r.shift + offset) / r.levels * theta - psi.to(theta)
    want = k.clamp(0, r.levels) / r.levels * (theta + phi.to(theta))
    try:
        probe = copy.deepcopy(m).eval()
        with torch.no_grad():
            got = probe(x)
    except Exception:  # the user's forward: any failure means "not this convention"
        return math.inf
    if not isinstance(got, Tensor) or got.shape != want.shape:
        return math.inf
    return float(((got.to(want) - want).abs() / (theta + phi.to(theta)).abs()).max())


def probe_deviation(m: nn.Module, r: QCFSReading) -> float:
    """Max ``|m(x) − QCFS(x)|`` over the probe input, relative to θ (``inf`` when ``m`` fails to run on it)."""
    return min(_deviation(m, r, shape) for shape in _probe_shapes(r.theta))


def qcfs_reading(m: nn.Module | None) -> QCFSReading | None:
    """The :class:`QCFSReading` of a QCFS-like module (a registered or built-in convention that it computes), else
    ``None``. fxsnn's own :class:`fxsnn.nn.QCFS` / ``DAQCFS`` are sites already and read ``None`` here.

    Raises :class:`fxsnn.ConversionError` for a module of a *registered* class whose θ / L / φ cannot be read
    or that fails the probe (see the module docstring); a built-in convention's class name that fails either
    is no site (a ``UserWarning`` says so when it has the attributes but fails the probe).
    """
    if m is None:
        return None
    convs, registered = _conventions(m)
    for conv in convs:
        try:
            if conv.when is not None and not conv.when(m):
                continue
            r = _reading(m, conv)
        except (AttributeError, TypeError, ValueError, RuntimeError) as exc:
            if registered:
                raise ConversionError(
                    f"{type(m).__name__} is registered as QCFS-like ({conv.name}) but cannot be read: "
                    f"{type(exc).__name__}: {exc}. Fix the theta= / levels= / shift= of its register_qcfs call"
                ) from exc
            continue
        dev = probe_deviation(m, r)
        if dev <= 1e-4:
            return r
        if registered:
            raise ConversionError(
                f"{type(m).__name__} is registered as QCFS-like ({conv.name}: θ {r.theta.flatten()[:3].tolist()}, "
                f"L={r.levels}, shift={r.shift:g}) but does not compute θ/L·clip(⌊x·L/θ + shift⌋, 0, L) on a "
                f"probe input (largest deviation {dev:.3g}·θ). Fix its register_qcfs call, or unregister it"
            )
        warnings.warn(
            f"a {type(m).__name__} module has the attributes of the {conv.name} convention but does not compute "
            f"QCFS on a probe input (largest deviation {dev:.3g}·θ); it is not converted as a site. If it is a QCFS "
            "activation, declare it with fxsnn.graph.patterns.register_qcfs",
            stacklevel=2,
        )
    return None
