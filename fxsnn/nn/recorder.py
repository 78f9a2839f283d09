"""In-line activation-range recorder: the observer of the prepare/calibrate/convert flow."""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CalibrationError
from .functional import along_channel_axis

__all__ = ["ActivationRecorder", "NonFiniteActivation"]


class NonFiniteActivation(CalibrationError):
    """A recorder was given NaN/±Inf while recording; ``module`` is the recorder (its statistics are unchanged).
    :func:`fxsnn.calibrate` turns it into :class:`fxsnn.DataError` naming the batch and the site."""

    def __init__(self, message: str, module: nn.Module):
        super().__init__(message)
        self.module = module


def _dense_channels(x: Tensor) -> tuple[Tensor, int]:
    """``(view, channel dim)``: ``x`` itself (channel dim 1), or for a channels-last ``x`` the dense view
    ``[B, *S, C]`` (channel dim -1), so that reductions and flattening read memory in order, without a copy.
    Max and histogram counts do not depend on the order, so both give bit-identical results."""
    if x.dim() > 2 and not x.is_contiguous():
        last = x.movedim(1, -1)
        if last.is_contiguous():
            return last, last.dim() - 1
    return x, 1


class ActivationRecorder(nn.Module):
    """A ReLU that records the per-channel range of what it sees.

    ``forward(x) = relu(x)``: it sits in line, so outputs are unchanged. While
    :attr:`recording` is true (``fxsnn.calibrate`` switches it on), it keeps in
    buffers, per channel ``c`` of ``x: [B, C, ...]``:

    - ``max_val[c]``: the running maximum of the *pre-activation* (may be ≤ 0);
    - ``hist[c]``: with ``percentile`` set, ``bins + 1`` counts: ``hist[c, 0]``
      counts the values ≤ 0, ``hist[c, j]`` those in ``((j−1)·w, j·w]`` with
      ``w = hist_hi[c] / bins`` (the range doubles, merging bin pairs exactly,
      whenever a larger value arrives).

    :meth:`theta` gives the threshold θ per channel: the running maximum, or
    the ``percentile``-th percentile of ``relu(x)`` (zeros included) when that
    is positive. **Dead channels** — those whose maximum is ≤ 0 on all the
    calibration data — would get θ ≤ 0 (the public FS-PC code keeps that
    negative θ, which makes them fire on negative input). fxsnn gives them the
    median θ of the site's live channels instead: they stay silent wherever the
    pre-activation stays ≤ 0 (``⌊(T·x + θ/2)/θ⌋ = 0``) and get a sensible
    range should they activate later. A site with no live channel at all (it
    output zeros on every calibration input) gets θ = 1 with a warning naming
    it: any positive θ keeps it silent wherever it was silent.

    **Clipped ReLUs.** With ``clip=a`` the recorder stands for ``min(max(x, 0), a)``
    (``nn.ReLU6``: ``a = 6``): it outputs that, and every θ is at most ``a``
    (``θ ← min(θ, a)``). This is exact for conversion: the QCFS activation that
    replaces the site saturates at θ (``QCFS_θ(x) = θ`` for every ``x ≥ θ``), so
    with ``θ ≤ a`` it gives the same output for ``x`` as for ``min(x, a)`` — the
    outer clip at ``a`` never acts, and the clipped ReLU converts exactly as a ReLU
    with the same θ (whose own clip at θ the conversion already makes). A
    percentile of ``min(relu(x), a)`` is ``min(percentile of relu(x), a)``, so
    both θ rules are the plain ReLU's, capped.

    **Many processes.** ``batch_max_hook`` (``None``: none) maps each batch's per-channel maximum before it is
    recorded; :func:`fxsnn.calibrate` under a process group sets it to an all-reduce with MAX, so every rank
    records the global batch's maximum and grows ``hist_hi`` as one process fed the global batches would (the
    histogram bin edges are then the same on every rank and the counts add up exactly).

    Example::

        >>> rec = ActivationRecorder(4); rec.recording = True
        >>> _ = rec(torch.randn(8, 4, 5, 5)); rec.theta().shape
        torch.Size([4])
    """

    batch_max_hook = None

    def __init__(
        self,
        channels: int | None = None,
        *,
        percentile: float | None = None,
        bins: int = 1024,
        clip: float | None = None,
    ):
        super().__init__()
        if clip is not None and not (float(clip) > 0 and math.isfinite(float(clip))):
            raise ValueError(f"clip must be a finite number > 0 or None; got {clip!r}")
        self.clip = None if clip is None else float(clip)
        if percentile is not None and not (0.0 < float(percentile) <= 100.0):
            raise ValueError(f"percentile must be in (0, 100]; got {percentile!r}")
        if bins < 2 or bins & (bins - 1):
            raise ValueError(f"bins must be a power of two >= 2; got {bins!r}")
        self.percentile = None if percentile is None else float(percentile)
        self.bins = int(bins)
        self.recording = False
        self.register_buffer("num_batches", torch.zeros((), dtype=torch.long))
        self.channels = channels
        c = channels or 0
        self.register_buffer("max_val", torch.full((c,), float("-inf")))
        if self.percentile is not None:
            self.register_buffer("hist", torch.zeros(c, self.bins + 1, dtype=torch.long))
            self.register_buffer("hist_hi", torch.zeros(c))

    # -- recording -----------------------------------------------------------
    @along_channel_axis
    def forward(self, x: Tensor) -> Tensor:
        if self.recording:
            self._record(x.detach())
        return torch.relu(x) if self.clip is None else F.hardtanh(x, 0.0, self.clip)

    @torch.no_grad()
    def _record(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise CalibrationError(
                f"ActivationRecorder needs inputs shaped [batch, channels, ...]; got {tuple(x.shape)}"
            )
        C = x.shape[1]
        if self.max_val.numel() != C:
            if self.num_batches.item() > 0 or (self.channels not in (None, C)):
                raise CalibrationError(
                    f"ActivationRecorder expected {self.max_val.numel() or self.channels} channels (dim 1) "
                    f"but got an input of shape {tuple(x.shape)}"
                )
            self._resize(C, x.device)
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteActivation(
                f"ActivationRecorder: the input of shape {tuple(x.shape)} holds NaN/±Inf; nothing was recorded", self
            )
        xv, cdim = _dense_channels(x)
        batch_max = xv.amax(dim=tuple(d for d in range(xv.dim()) if d != cdim)).to(self.max_val.dtype)
        if self.batch_max_hook is not None:
            batch_max = self.batch_max_hook(batch_max)
        torch.maximum(self.max_val, batch_max, out=self.max_val)
        if self.percentile is not None:
            self._record_hist(xv, cdim, batch_max)
        self.num_batches += 1

    def _resize(self, C: int, device) -> None:
        self.channels = C
        self.max_val = torch.full((C,), float("-inf"), device=device, dtype=self.max_val.dtype)
        if self.percentile is not None:
            self.hist = torch.zeros(C, self.bins + 1, dtype=torch.long, device=device)
            self.hist_hi = torch.zeros(C, device=device, dtype=self.max_val.dtype)

    def _record_hist(self, x: Tensor, cdim: int, batch_max: Tensor) -> None:
        C, nb = x.shape[cdim], self.bins
        hi = torch.where((self.hist_hi <= 0) & (batch_max > 0), batch_max, self.hist_hi)
        # Grow the range by powers of two so that old bins merge exactly: new bin j holds old bins ((j-1)f, jf].
        # (only where the batch exceeds the range: a channel whose batch max is <= 0 would give log2 < 0 or NaN)
        grow = torch.where((hi > 0) & (batch_max > hi), torch.ceil(torch.log2(batch_max / hi)), torch.zeros_like(hi))
        factor = torch.pow(2.0, grow).to(torch.long)
        if bool((factor > 1).any()):
            old = torch.arange(nb + 1, device=x.device).unsqueeze(0)
            idx = torch.div(old + factor.unsqueeze(1) - 1, factor.unsqueeze(1), rounding_mode="floor")  # ceil(j/f)
            merged = torch.zeros_like(self.hist)
            merged.scatter_add_(1, idx, self.hist)
            self.hist.copy_(merged)
            hi = hi * factor.to(hi.dtype)
        self.hist_hi.copy_(hi)
        # bucket = ceil(x·nb/hi) clipped to [0, nb]: 0 for x <= 0, j for x in ((j-1)w, jw]
        scale = torch.where(hi > 0, nb / hi, torch.zeros_like(hi)).to(x.dtype)
        shape = [1] * x.dim()
        shape[cdim] = C
        # int32 buckets (half the bytes of int64; C·(nb+1) is far below 2^31), updated in place
        bucket = torch.mul(x, scale.view(shape)).ceil_().clamp_(0, nb).to(torch.int32)
        bucket += (torch.arange(C, device=x.device, dtype=torch.int32) * (nb + 1)).view(shape)
        self.hist.view(-1).add_(torch.bincount(bucket.reshape(-1), minlength=C * (nb + 1)))

    # -- results -------------------------------------------------------------
    @property
    def has_data(self) -> bool:
        return int(self.num_batches) > 0

    def raw_theta(self) -> Tensor:
        """θ per channel before dead-channel handling (may be ≤ 0)."""
        if not self.has_data:
            raise CalibrationError("this recorder saw no data: run fxsnn.calibrate(gm, data) first")
        if self.percentile is None:
            return self._capped(self.max_val.clone())
        cdf = self.hist.to(torch.float64).cumsum(dim=1)
        total = cdf[:, -1:]
        rank = total * (self.percentile / 100.0)
        j = (cdf < rank).sum(dim=1)  # first bucket whose cumulative count reaches the rank
        # bucket 0 holds the values <= 0; bucket j >= 1 has upper edge j·hi/bins
        edge = self.hist_hi * j.to(self.hist_hi.dtype) / self.bins
        theta = torch.where(j > 0, edge, torch.zeros_like(edge))
        theta = torch.minimum(theta, self.max_val.clamp(min=0))
        return self._capped(torch.where(theta > 0, theta, self.max_val))

    def _capped(self, theta: Tensor) -> Tensor:
        """``min(θ, clip)`` for a clipped ReLU (see the class docstring); θ itself otherwise."""
        return theta if self.clip is None else theta.clamp(max=self.clip)

    def dead_channels(self) -> Tensor:
        """Boolean ``[C]``: channels whose pre-activation never exceeded 0."""
        return self.raw_theta() <= 0

    def theta(self, *, name: str = "this recorder") -> Tensor:
        """Threshold θ per channel ``[C]``, all positive (dead channels get the live median)."""
        raw = self.raw_theta()
        live = raw > 0
        if not bool(live.any()):
            warnings.warn(
                f"{name}: no channel ever activated on the calibration data (every pre-activation was <= 0); "
                "using theta = 1 there. Check the calibration data if this is unexpected.",
                stacklevel=2,
            )
            return torch.ones_like(raw)
        fill = raw[live].median()
        return torch.where(live, raw, fill)

    def extra_repr(self) -> str:
        rule = "max" if self.percentile is None else f"p{self.percentile:g}"
        status = f"batches={int(self.num_batches)}" if self.has_data else "no data"
        clip = "" if self.clip is None else f", clip={self.clip:g}"
        return f"channels={self.channels}, theta={rule}{clip}, {status}"

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "max_val"
        if key in state_dict and state_dict[key].shape != self.max_val.shape:
            self._resize(state_dict[key].shape[0], self.max_val.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
