"""Feature matching for label-free calibration: each site's output pulled towards the ANN's activation there.

With ``objective="distill"`` and ``feature_weight`` λ > 0 (:class:`~fxsnn.calibration.config.Stage1Config`,
:class:`~fxsnn.calibration.config.Stage2Config`) a stage minimises, per batch,

    L = τ² · KL( softmax(z_ANN / τ) ‖ softmax(z / τ) ) + λ · (1/S) Σ_s ‖a_s − a_s^ANN‖² / ‖a_s^ANN‖²

the distillation loss of :mod:`fxsnn.calibration.distill` plus the mean over the ``S`` activation sites of the
squared error between the site's output ``a_s`` ``[B, C, ...]`` (a (DA-)QCFS output in Stage 1; a ParallelIF's
rate, or its time-averaged weighted spikes in spike mode, in Stage 2) and the ANN's activation ``a_s^ANN``
(the ReLU output at the same site), relative to that activation's energy so that every site weighs alike
whatever its scale (a site whose ANN activation is all zero contributes its plain squared error).

Sites are matched by name (:func:`fxsnn.find_sites`; the names survive every pass). The teacher is traced
(:func:`fxsnn.trace`; a ``GraphModule`` is copied as it is) and normalised, and forward hooks read both
networks' site outputs; the teacher runs once per batch, under ``torch.no_grad``, on the batch the student
receives. The hooks are removed when the stage ends.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, fx, nn

from ..errors import CalibrationError, TraceError
from ..graph.sites import find_sites
from ..graph.tracing import trace
from ..passes.normalize import normalize
from .distill import frozen_teacher, kl_loss
from .measure import pick_output

__all__ = ["FeatureDistill", "feature_loss"]


def feature_loss(student: dict[str, Tensor], teacher: dict[str, Tensor]) -> Tensor:
    """``(1/S) Σ_s ‖a_s − a_s^ANN‖² / ‖a_s^ANN‖²`` over the sites of ``teacher`` (``[B, C, ...]`` each)."""
    terms = []
    for name, t in teacher.items():
        s = student[name].float()
        t = t.to(s.device).float()
        energy = t.square().sum()
        err = (s - t).square().sum()
        terms.append(err / torch.where(energy > 0, energy, float(t.numel())))  # no host sync per site on a GPU
    return torch.stack(terms).mean()


def _time_mean(out: Tensor, batch: int) -> Tensor:
    """A spike-mode site output ``[T·B, ...]`` as its time mean ``[B, ...]`` (a rate-mode one as it is)."""
    if out.shape[0] == batch or out.shape[0] % batch:
        return out
    return out.reshape((out.shape[0] // batch, batch) + tuple(out.shape[1:])).mean(dim=0)


class _Taps:
    """Forward hooks keeping the latest output of each named module of ``gm``."""

    def __init__(self, gm: nn.Module, names: list[str], *, detach: bool):
        self.outputs: dict[str, Tensor] = {}
        self.handles = []
        for name in names:
            self.handles.append(gm.get_submodule(name).register_forward_hook(self._hook(name, detach)))

    def _hook(self, name: str, detach: bool):
        def keep(_module, _args, out):
            self.outputs[name] = out.detach() if detach else out

        return keep

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.outputs.clear()


def _tapped_teacher(teacher: nn.Module, *, where: str) -> fx.GraphModule:
    try:
        gm = normalize(trace(teacher))
    except TraceError as exc:
        raise CalibrationError(
            f"{where}: feature_weight > 0 needs the teacher's activations, and tracing the teacher failed ({exc}); "
            "pass teacher=fxsnn.trace(model, leaf_modules=...) (a GraphModule is not traced again), "
            "or set feature_weight=0"
        ) from exc
    return frozen_teacher(gm)


def _site_names(gm: nn.Module) -> list[str]:
    return [s.name for s in find_sites(gm)]


class FeatureDistill:
    """The ``loss_fn(logits, _)`` of the module docstring for the ``student`` network being tuned.

    A context manager: entering registers the hooks (a forward pre-hook on ``student`` keeps its input; one hook
    per site keeps its output) and exiting removes them. Each call runs the teacher on the student's latest
    input, so the targets of the batches are not read (input-only batches suffice). Raises
    :class:`fxsnn.CalibrationError` when the teacher cannot be traced or its sites are not the student's.
    """

    def __init__(
        self,
        student: fx.GraphModule,
        teacher: nn.Module,
        *,
        temperature: float,
        weight: float,
        output: Callable | None,
        where: str,
    ):
        self.student, self.weight, self.where = student, float(weight), where
        self.teacher = _tapped_teacher(teacher, where=where)
        self.kl, self.output = kl_loss(temperature), output or pick_output
        names, theirs = _site_names(student), set(_site_names(self.teacher))
        missing = [n for n in names if n not in theirs]
        if missing or not names:
            raise CalibrationError(
                f"{where}: feature matching pairs each activation site with the teacher's site of the same name; "
                f"the teacher has no site {', '.join(map(repr, missing[:5])) or '(the network has none)'}. Distil "
                "from the model being converted (or a copy of it with other weights), or set feature_weight=0"
            )
        self.names = names
        self._input: Tensor | None = None
        self._taps: list[_Taps] = []
        self._pre = None

    def __enter__(self) -> FeatureDistill:
        self._taps = [_Taps(self.student, self.names, detach=False), _Taps(self.teacher, self.names, detach=True)]
        self._pre = self.student.register_forward_pre_hook(self._keep_input)
        return self

    def __exit__(self, *exc) -> None:
        for taps in self._taps:
            taps.remove()
        if self._pre is not None:
            self._pre.remove()
        self._pre, self._input = None, None

    def _keep_input(self, _module, args) -> None:
        self._input = args[0] if args else None

    def __call__(self, logits: Tensor, _target: Tensor | None = None) -> Tensor:
        if self._input is None:
            raise CalibrationError(f"{self.where}: FeatureDistill was called outside its `with` block")
        ours, theirs = self._taps
        with torch.no_grad():
            z = self.output(self.teacher(self._input))
        batch = theirs.outputs[self.names[0]].shape[0]
        student = {n: _time_mean(ours.outputs[n], batch) for n in self.names}
        return self.kl(logits, z) + self.weight * feature_loss(student, theirs.outputs)
