"""Label-free calibration: the stages' targets are the ANN's own logits (knowledge distillation).

With ``objective="distill"`` (:class:`~fxsnn.calibration.config.Stage1Config`,
:class:`~fxsnn.calibration.config.Stage2Config`) a stage minimises, per batch of ``B`` inputs,

    L = τ² · (1/B) Σ_b KL( softmax(z_ANN,b / τ) ‖ softmax(z_b / τ) )

where ``z`` ``[B, classes]`` are the logits of the network being tuned (for a lowered network the time-averaged
logits, Alg. 3 l. 8-9), ``z_ANN`` the teacher's and τ the ``temperature`` (Hinton et al., 2015; the τ² keeps the
gradient's size independent of τ). Dense ``[B, classes, H, W]`` logits are compared per position (KL over the
class axis, averaged over positions). The teacher is the user's ANN, run in eval mode without gradients on the
same inputs; it is never modified (:func:`frozen_teacher` copies it). Batches need no targets: a tensor, an
``(x,)`` tuple or an ``(x, y, ...)`` tuple (``y`` is ignored).

With ``objective="labels"`` and ``distill_weight`` α > 0 a stage minimises the mix of both (:func:`mixed_loss`)

    L = (1 − α) · CE(z, y) + α · τ² · (1/B) Σ_b KL( softmax(z_ANN,b / τ) ‖ softmax(z_b / τ) )

against the batches' class-index targets ``y`` and a teacher that may itself have been adapted with them
(``ConvertConfig(teacher="labels")``, the default for this mix).

A teacher can itself be adapted to the calibration images without labels (:func:`im_adapted_teacher`): its
BatchNorm affine terms γ, β are tuned to minimise the information-maximisation loss of SHOT (Liang et al., 2020)

    L_IM = (1/B) Σ_b H(p_b) − H(p̄),   p_b = softmax(z_b),   p̄ = (1/B) Σ_b p_b,   H(p) = −Σ_c p_c log p_c

(confident predictions per image, diverse over the batch; the second term keeps the predictions from
collapsing onto one class, the failure of entropy minimisation alone).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CalibrationError, DataError
from . import distributed
from .batches import check_finite, check_targets, input_of, run_batch, target_of
from .config import TrainSpec
from .finetune import check_reiterable, fine_tune
from .measure import pick_output

__all__ = [
    "Distilled",
    "kl_loss",
    "mixed_loss",
    "im_loss",
    "frozen_teacher",
    "im_adapted_teacher",
    "has_affine_batchnorm",
    "InputsOnly",
]


def frozen_teacher(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every parameter frozen (the user's model is untouched)."""
    teacher = copy.deepcopy(model)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def kl_loss(temperature: float = 1.0) -> Callable[[Tensor, Tensor], Tensor]:
    """``loss_fn(logits, teacher_logits)``: ``τ²·KL(softmax(t/τ) ‖ softmax(s/τ))``, the batch (and position) mean."""
    tau = float(temperature)

    def loss(logits: Tensor, teacher_logits: Tensor) -> Tensor:
        s = F.log_softmax(logits.float() / tau, dim=1)
        t = F.log_softmax(teacher_logits.to(logits.device).float() / tau, dim=1)
        kl = (t.exp() * (t - s)).sum(dim=1)  # [B] or [B, H, W]
        return kl.mean() * (tau * tau)

    return loss


def mixed_loss(weight: float, temperature: float = 1.0, loss_fn: Callable | None = None) -> Callable:
    """``loss_fn(logits, packed)`` for :class:`Distilled` batches with ``keep_targets=True``:
    ``(1 − α)·CE(z, y) + α·τ²·KL(softmax(z_ANN/τ) ‖ softmax(z/τ))`` with α = ``weight``, τ = ``temperature``.

    ``packed`` ``[B, 1 + classes, ...]`` holds the class index ``y`` in channel 0 and the teacher's logits
    ``z_ANN`` in the rest (:meth:`Distilled.pack`); ``loss_fn(z, y)``, when given, replaces the cross-entropy.
    """
    alpha, kl = float(weight), kl_loss(temperature)

    def loss(logits: Tensor, packed: Tensor) -> Tensor:
        y, teacher_logits = Distilled.unpack(packed.to(logits.device))
        ce = loss_fn(logits, y) if loss_fn is not None else F.cross_entropy(logits.float(), y)
        return (1.0 - alpha) * ce + alpha * kl(logits, teacher_logits)

    return loss


def im_loss(logits: Tensor, _target: Tensor | None = None) -> Tensor:
    """``L_IM`` of the module docstring for ``[B, classes]`` logits; ``_target`` is ignored (no labels needed).

    Dense ``[B, classes, ...]`` logits count every position of every image as one sample: the entropy is
    averaged over ``B·H·W`` predictions and ``p̄`` is their mean.
    """
    logp = F.log_softmax(logits.float(), dim=1)
    p = logp.exp()
    entropy = -(p * logp).sum(dim=1).mean()
    mean = p.transpose(0, 1).reshape(p.shape[1], -1).mean(dim=1)
    return entropy + (mean * mean.clamp_min(torch.finfo(mean.dtype).tiny).log()).sum()


class InputsOnly:
    """The re-iterable ``data`` as ``(x, placeholder)`` batches for :func:`fine_tune`, whose loss ignores targets
    (the placeholder, ``[B]`` zeros, only weighs the batch by its size across processes): the IM teacher's run and
    feature matching (:mod:`fxsnn.calibration.features`), whose losses read no target."""

    def __init__(self, data: Iterable, *, where: str):
        self.data, self.where = data, where

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for i, batch in enumerate(self.data):
            x = input_of(batch)
            if x is None:
                yield batch  # fine_tune's batch check names the problem
                continue
            if x.dim() == 0:
                raise DataError(f"{self.where}: batch {i} is a 0-dim tensor; each input needs a batch dimension")
            yield x, torch.zeros(len(x), device=x.device)


def _affine_batchnorm_params(model: nn.Module) -> list[Tensor]:
    return [
        p
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine
        for p in (m.weight, m.bias)
    ]


def has_affine_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer with γ, β (what :func:`im_adapted_teacher` tunes)."""
    return bool(_affine_batchnorm_params(model))


def im_adapted_teacher(
    model: nn.Module,
    data: Iterable,
    spec: TrainSpec | None = None,
    *,
    progress: bool = True,
    output: Callable | None = None,
) -> nn.Module:
    """A frozen copy of ``model`` whose BatchNorm γ, β minimise :func:`im_loss` on ``data`` (no labels needed).

    ``data``: a re-iterable of input batches (tensors, ``(x,)`` or ``(x, y, ...)`` tuples; ``y`` is ignored);
    ``output`` picks the logits from the model's output (default :func:`fxsnn.calibration.measure.pick_output`).
    The copy stays in eval mode throughout (a BatchNorm that tracks running statistics normalises with them, and
    they are kept); only the affine terms of its BatchNorm layers are tuned, by :func:`fine_tune` with ``spec``
    (default: one epoch, AdamW 1e-3 with a 10 % warm-up and a cosine decay). ``model`` is not modified, its
    ``requires_grad`` flags and training mode included. Raises :class:`fxsnn.CalibrationError` when ``model`` has
    no affine BatchNorm, and :class:`fxsnn.DataError` for a one-shot iterator or a bare tensor.

    Under a ``torch.distributed`` process group each rank's ``p̄`` is the mean over its own batch, so the step
    (the ranks' averaged gradient) is not exactly the one a single process takes on the global batch, as it is
    for the per-sample losses of the stages.
    """
    where = "fxsnn.calibration.distill.im_adapted_teacher"
    check_reiterable(data, where=where)
    distributed.check_sharded(data, where=where)
    teacher = frozen_teacher(model)
    params = _affine_batchnorm_params(teacher)
    if not params:
        raise CalibrationError(
            f"{where}: the model has no BatchNorm with affine terms to adapt; distil from the model itself "
            "(ConvertConfig(teacher='model')) or from its re-estimated BN statistics (teacher='adapted')"
        )
    for p in params:
        p.requires_grad_(True)
    spec = spec or TrainSpec(epochs=1, lr=1e-3)
    inputs = InputsOnly(data, where=where)
    fine_tune(teacher, params, inputs, spec, where=where, loss_fn=im_loss, output=output, progress=progress)
    for p in params:
        p.requires_grad_(False)
    return teacher


class Distilled:
    """The re-iterable ``data`` with each batch's target replaced by the teacher's logits: yields ``(x, z_ANN)``.

    ``teacher(x)`` runs under ``torch.no_grad`` (the teacher is expected in eval mode, see
    :func:`frozen_teacher`); ``output`` picks its logits (default :func:`fxsnn.calibration.measure.pick_output`).
    Batches are a tensor or a tuple/list whose first element is the input. With ``keep_targets`` each batch must
    be ``(x, y, ...)`` with integer targets ``y`` ``[B]`` (``[B, ...]`` for dense logits) and yields
    ``(x, pack(y, z_ANN))`` for :func:`mixed_loss`; ``checked`` (for the default cross-entropy) also refuses
    labels outside ``[0, classes)`` as :func:`~fxsnn.calibration.batches.check_targets` does, while without it
    (a user's ``loss_fn``) any integer value passes, an ignore index such as 255 or −100 included.
    """

    def __init__(
        self,
        data: Iterable,
        teacher: Callable,
        *,
        output: Callable | None = None,
        where: str,
        keep_targets: bool = False,
        checked: bool = True,
    ):
        self.data, self.teacher, self.output, self.where = data, teacher, output or pick_output, where
        self.keep_targets, self.checked = keep_targets, checked

    @staticmethod
    def pack(y: Tensor, teacher_logits: Tensor) -> Tensor:
        """``[B, 1 + classes, ...]``: the class indices ``y`` ``[B, ...]`` as channel 0 (exact in float32 for
        indices below 2**24), the float32 logits ``[B, classes, ...]`` after it."""
        z = teacher_logits.float()
        return torch.cat([y.to(z.device, torch.float32).unsqueeze(1), z], dim=1)

    @staticmethod
    def unpack(packed: Tensor) -> tuple[Tensor, Tensor]:
        """``(y, teacher_logits)`` from :meth:`pack`'s tensor; ``y`` as int64."""
        return packed[:, 0].long(), packed[:, 1:]

    def __len__(self) -> int:
        return len(self.data)  # TypeError when unknown, as for the data itself

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for i, batch in enumerate(self.data):
            x = input_of(batch)
            if x is None:
                yield batch  # the stage's batch check names the problem
                continue
            check_finite(x, where=self.where, index=i)
            y = self._targets(batch, i) if self.keep_targets else None
            with torch.no_grad():
                z = self.output(run_batch(self.teacher, x, where=self.where + " (teacher)", index=i)).detach()
            if y is None:
                yield x, z
            else:
                yield x, self.pack(self._checked(z, y, i), z)

    def _checked(self, z: Tensor, y: Tensor, i: int) -> Tensor:
        if self.checked:
            return check_targets(z, y, where=self.where, index=i)
        try:  # a user's loss: its own targets' values, but a layout the packing can carry
            y = check_targets(z, y, where=self.where, index=i, in_range=False)
        except DataError as exc:
            raise DataError(
                f"{exc}. distill_weight > 0 carries the targets beside the teacher's logits, as integers (an "
                "ignore index allowed): convert them, or set distill_weight=0"
            ) from None
        if y.numel() and int(y.abs().max()) >= 2**24:
            raise DataError(f"{self.where}: batch {i} has a target of magnitude >= 2**24; set distill_weight=0")
        return y

    def _targets(self, batch, i: int) -> Tensor:
        y = target_of(batch)
        if not isinstance(y, Tensor):
            raise DataError(
                f"{self.where}: batch {i} has no target tensor; distill_weight > 0 mixes the cross-entropy against "
                "the targets with the distillation: pass (input, target) batches, or set distill_weight=0 "
                "(objective='distill' needs no targets)"
            )
        return y
