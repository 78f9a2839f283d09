"""``fxsnn.analyze``: where the SNN drifts from the ANN, layer by layer, and what it costs.

For every activation site ``l`` (matched by its qualified module name, which
every pass keeps) and every input in ``data``:

- ANN side: ``a`` = the ReLU output of the source network at the site;
- SNN side: ``k`` = the ParallelIF's integer spike count per neuron
  (``module.spike_count`` of its time-averaged input) and the average firing
  rate ``r = k · θ_post / T`` — the time-mean of the weighted spike train, in
  the same units as ``a`` (the red histograms of the paper's Figures 1, 3, 4).

Statistics (over all neurons of all inputs): mean and std of ``a`` and ``r``;
sparsity = fraction of zeros (``a = 0``; ``k = 0``, i.e. silent neurons);
``mae = mean |a − r|`` (paired: same input, same neuron); ``wasserstein`` =
W1 between the two empirical distributions, ``mean |sort(a) − sort(r)|`` on a
uniform paired subsample of at most ``max_samples`` values per site (exact
below that); ``spike_rate = mean(k) / T``, spikes per neuron per time step.
The energy table is described in :mod:`fxsnn.report.energy`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, fx, nn
from torch.utils.hooks import RemovableHandle

from ..calibration.batches import batches, check_batch
from ..calibration.state import preserved_state
from ..errors import ConversionError
from ..graph.edit import require_graph_module
from ..graph.sites import AnalogOp, AnalogTable, find_hybrid_ops, find_sites
from ..modes import get_mode, neurons, set_mode, time_steps
from ..nn import SITE_MODULES, ParallelIF
from ..nn import functional as Fx
from ..passes import normalize, to_serial
from .energy import WEIGHTED_LAYERS, EnergyModel, SynapticLayer, energy_table, format_energy, layer_macs
from .table import Rows

__all__ = ["analyze", "Report", "SiteReport", "SerialGap", "resolve_layers"]


@dataclass(frozen=True)
class SiteReport:
    """One activation site of :func:`fxsnn.analyze` (statistics over every neuron of every input).

    Attributes:
        site: qualified module path.
        channels: ``C``; ``neurons``: neurons per input (``C·H·W``).
        ann_mean, ann_std, ann_sparsity: of the ANN activation ``a`` (sparsity = fraction of ``a = 0``).
        snn_mean, snn_std, snn_sparsity: of the SNN average firing rate
            ``r = k·θ_post/T`` (sparsity = fraction of neurons with ``k = 0``).
        mae: ``mean |a − r|`` over paired neurons.
        wasserstein: W1 distance between the distributions of ``a`` and ``r``.
        spike_rate: ``mean(k)/T``, spikes per neuron per time step, in ``[0, 1]``.
    """

    site: str
    channels: int
    neurons: int
    ann_mean: float
    ann_std: float
    ann_sparsity: float
    snn_mean: float
    snn_std: float
    snn_sparsity: float
    mae: float
    wasserstein: float
    spike_rate: float


@dataclass(frozen=True)
class SerialGap:
    """The serial IF network (:func:`fxsnn.passes.to_serial`: same weights and thresholds, one time step at a
    time) against the parallel SNN on the same inputs: what serial neuromorphic hardware would lose.

    Attributes:
        max_abs_diff: largest ``|serial logit − parallel logit|`` over every input and class.
        agreement: fraction of inputs where both predict the same class.
        top1: the serial network's accuracy (``None`` without targets).
    """

    max_abs_diff: float
    agreement: float
    top1: float | None


_SITE_HEADERS = {
    "site": "site",
    "neurons": "neurons",
    "ann_mean": "ANN mean",
    "snn_mean": "SNN mean",
    "ann_std": "ANN std",
    "snn_std": "SNN std",
    "ann_sparsity": "ANN sparsity",
    "snn_sparsity": "SNN sparsity",
    "mae": "MAE",
    "wasserstein": "W1",
    "spike_rate": "spikes/neuron/step",
}
_ENERGY_HEADERS = {
    "layer": "layer",
    "op": "op",
    "input": "input",
    "macs": "FLOPs (MACs)",
    "input_rate": "input rate",
    "sops": "SOPs",
    "ann_energy": "ANN J",
    "snn_energy": "SNN J",
}


class Report:
    """What :func:`fxsnn.analyze` returns. Prints as tables; ``to_dict()``; ``to_csv()``.

    Attributes:
        sites: :class:`SiteReport` rows (one per analysed site, graph order).
        energy: :class:`fxsnn.report.energy.SynapticLayer` rows (every weighted layer).
        T, mode, samples: time steps, execution mode used, number of inputs.
        ann_top1, snn_top1: accuracies (``None`` without targets);
        agreement: fraction of inputs where ANN and SNN predict the same class.
        serial: :class:`SerialGap` of the serial IF network against the SNN (``None`` unless
            ``analyze(..., serial=True)``).
        ann_macs, snn_macs, snn_sops: per-input totals (``snn_macs`` = analog layers).
        ann_energy, snn_energy: per-input energy in joules; ``energy_model``: the constants.
        values: ``{site: (ann, snn)}`` paired numpy samples used for W1 and the plots.
        spike_rates: ``{site: mean(k)/T}`` for every site of the SNN (analysed or not).
        hybrid: the SNN's analog ops that make it a hybrid (:func:`fxsnn.graph.sites.find_hybrid_ops`; empty
            for a pure SNN), printed with a note and in ``to_dict()["analog"]``.
    """

    def __init__(
        self,
        *,
        sites: Sequence[SiteReport],
        energy: Sequence[SynapticLayer],
        T: int,
        mode: str,
        samples: int,
        ann_top1: float | None,
        snn_top1: float | None,
        agreement: float,
        energy_model: EnergyModel,
        values: dict[str, tuple[np.ndarray, np.ndarray]],
        spike_rates: Mapping[str, float],
        hybrid: Sequence[AnalogOp] = (),
        serial: SerialGap | None = None,
    ) -> None:
        self.sites = Rows(sites, _SITE_HEADERS)
        self.serial = serial
        self.energy = Rows(energy, _ENERGY_HEADERS)
        self.T, self.mode, self.samples = T, mode, samples
        self.ann_top1, self.snn_top1, self.agreement = ann_top1, snn_top1, agreement
        self.energy_model = energy_model
        self.values = values
        self.spike_rates = dict(spike_rates)
        self.hybrid = AnalogTable(hybrid)
        self.ann_macs = sum(r.macs for r in energy)
        self.snn_macs = sum(r.macs for r in energy if r.input == "analog")
        self.snn_sops = float(sum(r.sops for r in energy if r.sops is not None))
        self.ann_energy = float(sum(r.ann_energy for r in energy))
        self.snn_energy = float(sum(r.snn_energy for r in energy))

    def site(self, name: str) -> SiteReport:
        """The row of site ``name`` (``KeyError`` naming the analysed sites otherwise)."""
        for r in self.sites:
            if r.site == name:
                return r
        raise KeyError(f"site {name!r} was not analysed; analysed sites: {[r.site for r in self.sites]}")

    def totals(self) -> dict:
        """Per-input totals and the run's settings as plain values."""
        return {
            "T": self.T,
            "mode": self.mode,
            "samples": self.samples,
            "ann_top1": self.ann_top1,
            "snn_top1": self.snn_top1,
            "agreement": self.agreement,
            "ann_macs": self.ann_macs,
            "snn_macs": self.snn_macs,
            "snn_sops": self.snn_sops,
            "ann_energy_j": self.ann_energy,
            "snn_energy_j": self.snn_energy,
            "e_mac_pj": self.energy_model.e_mac,
            "e_ac_pj": self.energy_model.e_ac,
            "hybrid": bool(self.hybrid),
            "serial_max_abs_logit_diff": self.serial.max_abs_diff if self.serial else None,
            "serial_agreement": self.serial.agreement if self.serial else None,
            "serial_top1": self.serial.top1 if self.serial else None,
        }

    def _serial_line(self) -> list[str]:
        if self.serial is None:
            return []
        g = self.serial
        acc = "" if g.top1 is None else f"; top-1 serial {100 * g.top1:.2f} % vs parallel {100 * self.snn_top1:.2f} %"
        return [
            f"serial IF network (fxsnn.passes.to_serial, same weights and thresholds) vs this parallel SNN: "
            f"max |logit difference| {g.max_abs_diff:.4g}, predictions agree on {100 * g.agreement:.2f} %{acc}",
        ]

    def __str__(self) -> str:
        acc = ""
        if self.ann_top1 is not None:
            acc = f"; top-1 ANN {100 * self.ann_top1:.2f} % vs SNN {100 * self.snn_top1:.2f} %"
        ratio = self.snn_energy / self.ann_energy if self.ann_energy else float("nan")
        em = self.energy_model
        note = self.hybrid.hybrid_note()
        return "\n".join(
            ([note, ""] if note else [])
            + [
                f"fxsnn.analyze: T={self.T} ({self.mode} mode), {self.samples} inputs{acc}; "
                f"predictions agree on {100 * self.agreement:.2f} %",
                *self._serial_line(),
                "",
                str(self.sites),
                "",
                str(self.energy),
                "",
                f"per input: ANN {self.ann_macs:,} MACs = {format_energy(self.ann_energy)}; SNN {self.snn_macs:,} MACs + "
                f"{self.snn_sops:,.0f} SOPs = {format_energy(self.snn_energy)} "
                f"({ratio:.3g} × ANN; E_MAC = {em.e_mac:g} pJ, E_AC = {em.e_ac:g} pJ)",
            ]
            + (
                ["(a layer fed through an analog op runs as MACs; the analog ops' own arithmetic is not counted)"]
                if note
                else []
            )
        )

    def __repr__(self) -> str:
        return f"Report(T={self.T}, {len(self.sites)} sites, {len(self.energy)} weighted layers)"

    def to_dict(self) -> dict:
        """``{"totals": {...}, "sites": [...], "energy": [...], "spike_rates": {...}, "analog": [...]}`` of plain
        Python values (no samples); ``analog`` lists the hybrid ops as ``{"kind", "node", "path"}``."""
        return {
            "totals": self.totals(),
            "sites": self.sites.to_dict(),
            "energy": self.energy.to_dict(),
            "spike_rates": dict(self.spike_rates),
            "analog": self.hybrid.to_dict(),
        }

    def to_csv(self, path: str | os.PathLike | None = None, *, table: str = "sites") -> str:
        """CSV text of ``table`` (``"sites"`` or ``"energy"``); also written to ``path`` if given."""
        if table not in ("sites", "energy"):
            raise ValueError(f"Report.to_csv: table must be 'sites' or 'energy'; got {table!r}")
        return getattr(self, table).to_csv(path)


class _SiteStats:
    """Streaming float64 sums for one site, plus a paired bottom-k uniform subsample."""

    def __init__(self, max_samples: int, seed: int) -> None:
        self.n = 0
        self.sums = torch.zeros(8, dtype=torch.float64)  # Σa Σa² #a=0 Σr Σr² #k=0 Σ|a−r| Σk
        self.max_samples = max_samples
        self.seed = seed
        self.gen = None
        self.keys = self.a = self.r = None
        self.neurons = 0

    def add(self, a: Tensor, r: Tensor, k: Tensor) -> None:
        a, r, k = a.detach().reshape(-1), r.detach().reshape(-1), k.detach().reshape(-1)
        a64, r64 = a.double(), r.double()
        s = torch.stack(
            [
                a64.sum(),
                (a64 * a64).sum(),
                (a == 0).sum().double(),
                r64.sum(),
                (r64 * r64).sum(),
                (k == 0).sum().double(),
                (a64 - r64).abs().sum(),
                k.double().sum(),
            ]
        )
        self.sums += s.cpu()
        self.n += a.numel()
        self._sample(a, r)

    def _sample(self, a: Tensor, r: Tensor) -> None:
        if self.max_samples <= 0:
            return
        if self.gen is None:
            self.gen = torch.Generator(device=a.device).manual_seed(self.seed)
        keys = torch.rand(a.numel(), generator=self.gen, device=a.device)
        if self.keys is not None and self.keys.numel() >= self.max_samples:
            keep = keys < self.keys.max()
            keys, a, r = keys[keep], a[keep], r[keep]
        if self.keys is not None:
            keys, a, r = torch.cat([self.keys, keys]), torch.cat([self.a, a]), torch.cat([self.r, r])
        if keys.numel() > self.max_samples:
            idx = torch.topk(keys, self.max_samples, largest=False).indices
            keys, a, r = keys[idx], a[idx], r[idx]
        self.keys, self.a, self.r = keys, a, r

    def row(self, site: str, channels: int, T: int) -> SiteReport:
        n = max(self.n, 1)
        sa, sa2, za, sr, sr2, zk, sabs, sk = (float(v) for v in self.sums)
        std = lambda s, s2: float(np.sqrt(max(s2 / n - (s / n) ** 2, 0.0)))  # noqa: E731
        a, r = self.arrays()
        w1 = float(np.abs(np.sort(a) - np.sort(r)).mean()) if a.size else float("nan")
        return SiteReport(
            site,
            channels,
            self.neurons,
            sa / n,
            std(sa, sa2),
            za / n,
            sr / n,
            std(sr, sr2),
            zk / n,
            sabs / n,
            w1,
            sk / n / T,
        )

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self.a is None:
            return np.zeros(0), np.zeros(0)
        return self.a.double().cpu().numpy(), self.r.double().cpu().numpy()


def resolve_layers(layers: str | int | Iterable[str | int] | None, names: Sequence[str], *, where: str) -> list[str]:
    """Site names from ``layers``: ``None`` (all), a name, or a list of names and/or integer indices."""
    if layers is None:
        return list(names)
    if isinstance(layers, (str, int)):
        layers = [layers]
    out = []
    for item in layers:
        if isinstance(item, bool) or not isinstance(item, (str, int, np.integer)):
            raise TypeError(f"{where}: layers takes site names or integer indices; got {item!r}")
        if isinstance(item, str):
            if item not in names:
                shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
                raise ValueError(
                    f"{where}: no activation site named {item!r}. The sites are: {shown} "
                    f"(or pass integer indices 0..{len(names) - 1}; fxsnn.find_sites(gm) lists them)"
                )
            out.append(item)
        else:
            if not -len(names) <= int(item) < len(names):
                raise ValueError(
                    f"{where}: layer index {int(item)} is out of range; the network has {len(names)} sites (0..{len(names) - 1})"
                )
            out.append(names[int(item)])
    if not out:
        raise ValueError(f"{where}: layers is empty; pass None for every site")
    return list(dict.fromkeys(out))


def _ann_graph(ann: nn.Module, where: str) -> fx.GraphModule:
    if any(isinstance(m, ParallelIF) for m in ann.modules()):
        raise ConversionError(
            f"{where}: the first argument is a lowered SNN; call analyze(ann, snn, data) with the ANN first"
        )
    return normalize(require_graph_module(ann, where=where))


def _total(data: Iterable, max_batches: int | None) -> int | None:
    try:
        n = len(data)
    except TypeError:
        return max_batches
    return n if max_batches is None else min(n, max_batches)


@contextlib.contextmanager
def _removed(handles: list[RemovableHandle]) -> Iterator[None]:
    """Remove the hook ``handles`` on exit."""
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _mode_kept(snn: nn.Module) -> Iterator[None]:
    """Put the network back into its execution mode on exit."""
    old = get_mode(snn)
    try:
        yield
    finally:
        set_mode(snn, old)


def _check_arguments(
    ann: object, snn: object, max_batches: object, energy: EnergyModel | None, where: str
) -> EnergyModel:
    """Raise for a bad argument of :func:`analyze`; returns the energy model to use."""
    if not isinstance(snn, fx.GraphModule) or not neurons(snn):
        raise ConversionError(
            f"{where}: snn must be a lowered GraphModule (fxsnn.passes.lower_to_paraif); it has no ParallelIF neuron"
        )
    if not isinstance(ann, nn.Module):
        raise TypeError(f"{where}: ann must be an nn.Module; got {type(ann).__name__}")
    if max_batches is not None and (
        isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
    ):
        raise ValueError(f"{where}: max_batches must be an integer >= 1 or None; got {max_batches!r}")
    energy = EnergyModel() if energy is None else energy
    if not isinstance(energy, EnergyModel):
        raise TypeError(f"{where}: energy must be an fxsnn.report.EnergyModel; got {type(energy).__name__}")
    return energy


def _snn_site_names(snn: fx.GraphModule) -> list[str]:
    """The ParallelIF sites of ``snn``, in graph order."""
    snn_sites = [s for s in find_sites(snn) if s.kind == "ParallelIF"]
    return [s.name for s in snn_sites]


def _check_ann_sites(ann_gm: fx.GraphModule, chosen: Sequence[str], where: str) -> None:
    """Raise unless the ANN has an activation site under every chosen SNN site name."""
    ann_modules = dict(ann_gm.named_modules())
    missing = [n for n in chosen if not isinstance(ann_modules.get(n), (nn.ReLU,) + SITE_MODULES)]
    if missing:
        raise ConversionError(
            f"{where}: the ANN has no activation site named {missing[0]!r} (the SNN does); pass the ANN this SNN was "
            f"converted from (its sites: {find_sites(ann_gm).names()[:8]})"
        )


class _Probes:
    """The forward hooks of :func:`analyze`: ANN activations, SNN spike counts and the MACs of the first batch."""

    def __init__(self, names: Sequence[str], chosen: Sequence[str], *, max_samples: int, seed: int, where: str) -> None:
        self.chosen = list(chosen)
        self.stats = {n: _SiteStats(max_samples if n in chosen else 0, seed + i) for i, n in enumerate(names)}
        self.ann_out: dict[str, Tensor] = {}
        self.macs: dict[str, int] = {}
        self.first_batch = True
        self.where = where

    def register(self, ann_gm: fx.GraphModule, snn: fx.GraphModule) -> list[RemovableHandle]:
        """Hook the chosen ANN sites, every SNN site and every weighted SNN layer; returns the handles."""
        ann_modules, snn_modules = dict(ann_gm.named_modules()), dict(snn.named_modules())
        handles = [ann_modules[n].register_forward_hook(self._ann_hook(n)) for n in self.chosen]
        handles += [snn_modules[n].register_forward_hook(self._snn_hook(n)) for n in self.stats]
        handles += [
            m.register_forward_hook(self._mac_hook(n)) for n, m in snn.named_modules() if isinstance(m, WEIGHTED_LAYERS)
        ]
        return handles

    def batch_done(self) -> None:
        """Called after both networks ran a batch: MACs are counted once, stale activations dropped."""
        self.first_batch = False
        self.ann_out.clear()

    def _ann_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, out: Tensor) -> None:
            self.ann_out[name] = out.detach()

        return hook

    def _snn_hook(self, name: str) -> Callable[..., None]:
        def hook(module: ParallelIF, args: tuple, out: Tensor) -> None:
            self._count(name, module, args[0])

        return hook

    def _mac_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, out: Tensor) -> None:
            if self.first_batch:
                self.macs[name] = self.macs.get(name, 0) + layer_macs(module, args[0], out)

        return hook

    def _count(self, name: str, module: ParallelIF, x: Tensor) -> None:
        x_mean = module.time_mean(x) if module.mode == "spike" else x
        k = module.spike_count(x_mean)
        st = self.stats[name]
        st.neurons = k[0].numel()
        if name in self.ann_out:
            a = self.ann_out.pop(name)
            r = Fx.count_to_rate(k, module.T, module.theta_post)
            if a.shape != r.shape:
                raise ConversionError(
                    f"{self.where}: site {name!r} gives ANN activations of shape {tuple(a.shape)} but SNN rates of "
                    f"shape {tuple(r.shape)}; pass the ANN this SNN was converted from"
                )
            st.add(a, r, k)
        else:
            st.sums[7] += float(k.double().sum())
            st.n += k.numel()


@dataclass
class _Tally:
    """Per-input counts over the batches: inputs, correct top-1 of each network, agreeing predictions."""

    samples: int = 0
    correct_ann: int = 0
    correct_snn: int = 0
    agree: int = 0
    has_targets: bool = True

    def add(self, n: int, ann_logits: Tensor, snn_logits: Tensor, y: Tensor | None) -> None:
        pa, ps = ann_logits.argmax(dim=1), snn_logits.argmax(dim=1)
        self.agree += int((pa == ps).sum())
        self.samples += n
        if y is None:
            self.has_targets = False
        elif self.has_targets:
            y = y.to(pa.device)
            self.correct_ann += int((pa == y).sum())
            self.correct_snn += int((ps == y).sum())

    def top1(self, correct: int) -> float | None:
        return correct / self.samples if self.has_targets and self.samples else None


@dataclass
class _SerialTally:
    """The serial network against the parallel one: largest logit difference, agreeing predictions, correct."""

    max_abs_diff: float = 0.0
    agree: int = 0
    correct: int = 0

    def add(self, serial_logits: Tensor, snn_logits: Tensor, y: Tensor | None) -> None:
        diff = (serial_logits - snn_logits).abs()
        self.max_abs_diff = max(self.max_abs_diff, float(diff.max()) if diff.numel() else 0.0)
        ps = serial_logits.argmax(dim=1)
        self.agree += int((ps == snn_logits.argmax(dim=1)).sum())
        if y is not None:
            self.correct += int((ps == y.to(ps.device)).sum())


def _run(
    ann_gm: fx.GraphModule,
    snn: fx.GraphModule,
    data: Iterable,
    probes: _Probes,
    *,
    mode: str | None,
    max_batches: int | None,
    progress: bool,
    where: str,
    serial: nn.Module | None = None,
) -> tuple[_Tally, _SerialTally | None]:
    """Feed ``data`` through both networks (eval, SNN in ``mode``; and the serial network when given), state
    restored after; returns the tallies."""
    tally, serial_tally = _Tally(), (_SerialTally() if serial is not None else None)
    with preserved_state(ann_gm, snn), _removed(probes.register(ann_gm, snn)), _mode_kept(snn):
        if mode is not None:
            set_mode(snn, mode)
        ann_gm.eval()
        snn.eval()
        for i, (x, y) in enumerate(
            batches(data, where=where, model=snn, progress=progress, total=_total(data, max_batches))
        ):
            if max_batches is not None and i >= max_batches:
                break
            check_batch(ann_gm, x, where=where, index=i)
            ann_logits = ann_gm(x)
            snn_logits = snn(x)
            probes.batch_done()
            tally.add(x.shape[0], ann_logits, snn_logits, y)
            if serial is not None:
                serial_tally.add(serial.eval()(x), snn_logits, y)
    return tally, serial_tally


def _report(
    snn: fx.GraphModule,
    probes: _Probes,
    tally: _Tally,
    serial: _SerialTally | None,
    *,
    T: int,
    mode: str,
    energy: EnergyModel,
) -> Report:
    """Assemble the :class:`Report` from what the probes and the tally collected."""
    stats, chosen, snn_modules = probes.stats, probes.chosen, dict(snn.named_modules())
    site_rows = [stats[n].row(n, snn_modules[n].channels, T) for n in chosen]
    rates = {n: (st.sums[7].item(), st.n) for n, st in stats.items()}
    energy_rows = energy_table(snn, probes.macs, rates, T, energy)
    values = {n: stats[n].arrays() for n in chosen}
    return Report(
        sites=site_rows,
        energy=energy_rows,
        T=T,
        mode=mode,
        samples=tally.samples,
        ann_top1=tally.top1(tally.correct_ann),
        snn_top1=tally.top1(tally.correct_snn),
        agreement=tally.agree / tally.samples if tally.samples else float("nan"),
        energy_model=energy,
        values=values,
        spike_rates={n: (s / c / T if c else 0.0) for n, (s, c) in rates.items()},
        hybrid=find_hybrid_ops(snn),
        serial=None if serial is None else _serial_gap(serial, tally),
    )


def _serial_gap(serial: _SerialTally, tally: _Tally) -> SerialGap:
    n = tally.samples
    return SerialGap(
        serial.max_abs_diff, serial.agree / n if n else float("nan"), tally.top1(serial.correct) if n else None
    )


@torch.no_grad()
def analyze(
    ann: nn.Module,
    snn: fx.GraphModule,
    data: Iterable,
    *,
    layers: str | int | Iterable[str | int] | None = None,
    energy: EnergyModel | None = None,
    mode: str | None = None,
    max_batches: int | None = None,
    max_samples: int = 100_000,
    seed: int = 0,
    progress: bool = True,
    serial: bool = False,
) -> Report:
    """Compare ``ann`` and its converted ``snn`` site by site on ``data``, and count SOPs and energy.

    Args:
        ann: the source network (any ``nn.Module``; it is traced and
            normalised on a copy, so its ReLU sites get the SNN's names), or an
            earlier fxsnn stage of it (recorders, QCFS, DA-QCFS).
        snn: the lowered network (:func:`fxsnn.passes.lower_to_paraif`).
        data: an iterable of batches (input tensors or ``(input, target)``);
            with targets the report includes both top-1 accuracies.
        layers: sites to compare — ``None`` (all), names, or integer indices
            into :func:`fxsnn.find_sites` of the SNN. Spike rates of every
            site are still measured for the energy table.
        energy: :class:`fxsnn.report.EnergyModel` (default 4.6 pJ/MAC, 0.9 pJ/AC).
        mode: run the SNN in ``"rate"`` or ``"spike"`` mode for this call
            (restored after); ``None`` keeps its mode. Spike counts are the same.
        max_batches: stop after this many batches.
        max_samples: per-site paired subsample kept for W1 and plots.
        serial: also run the serial IF network of ``snn`` (:func:`fxsnn.passes.to_serial`: the same weights,
            θ, ψ_DA and Δb, one time step at a time — not an equivalent network: its neurons see their input late
            and can fire early) on every batch and report its gap to the parallel SNN in ``Report.serial``
            (:class:`SerialGap`: max |logit difference|, prediction agreement, top-1 with targets). It costs T
            forward passes per batch, about one more spike-mode run.

    Memory: one batch of the ANN's activations at the chosen sites is held
    while the SNN runs (for the paired MAE); lower the batch size for large models.

    Returns a :class:`Report` (see :mod:`fxsnn.report.analysis` for the statistics
    and :mod:`fxsnn.report.energy` for ``SOP_l = T · r_in · FLOPs_l`` and the energy).

    Example::

        >>> rep = fxsnn.analyze(model, snn, loader, layers=["layer1.0.relu", "layer3.2.relu_1"])
        >>> print(rep); rep.to_csv("sites.csv"); rep.to_csv("energy.csv", table="energy")
    """
    where = "fxsnn.analyze"
    energy = _check_arguments(ann, snn, max_batches, energy, where)
    T = time_steps(snn)
    names = _snn_site_names(snn)
    chosen = sorted(resolve_layers(layers, names, where=where), key=names.index)  # rows in graph order
    ann_gm = _ann_graph(ann, where)
    _check_ann_sites(ann_gm, chosen, where)
    probes = _Probes(names, chosen, max_samples=max_samples, seed=seed, where=where)
    serial_net = to_serial(snn) if serial else None  # a copy, made before any hook is registered on snn
    run = {"mode": mode, "max_batches": max_batches, "progress": progress, "where": where, "serial": serial_net}
    tally, serial_tally = _run(ann_gm, snn, data, probes, **run)
    return _report(snn, probes, tally, serial_tally, T=T, mode=get_mode(snn) if mode is None else mode, energy=energy)
