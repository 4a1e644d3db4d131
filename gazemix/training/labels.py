"""Which label a mixed sample is trained on: the mixer's, the one people perceive, or the one human gaze gives.

A mix is a sum of sources (:mod:`gazemix.contract`): source ``s`` of output ``b`` is image ``index_s[b]`` with
label weight ``w_s[b]``. A label source replaces the weights and rebuilds the targets from them,
``targets[b] = sum_s w_s[b] * y(index_s[b])`` with ``y`` the (label-smoothed) one-hot of each image, the same
way for every mixer (this step never looks at which mixer made the mix):

* ``mixer``: the mixer's own weights and targets, untouched.
* ``human``: the share people perceive. ``lam = w_own / (w_own + w_partners)`` (the label weight of image 1 as
  ``gazemix study build`` stores it) becomes ``f(lam)``, a curve fitted by ``gazemix humans calibrate``
  (:class:`gazemix.study.calibration.PerceivedShare`); the own image gets ``f(lam)`` and the partners share
  ``1 - f(lam)`` in proportion to their own weights.
* ``gaze``: the share of human gaze. Each source's weight is the gaze mass it keeps in the mixed image over the
  mass all sources keep (:meth:`MixResult.replay_sources` on *held-out* gaze maps). An output keeps the mixer's
  weights where one of its images has no held-out gaze in its crop, or where the mix keeps no gaze mass at all
  (counted as fallbacks).

Held-out gaze. A mixer that reads gaze must never get its label from the gaze that guided it (the design of
:mod:`gazemix.observers`, as in scoring). With ``gaze`` labels the training data split each image's observers
into a guide half and an evaluation half (:func:`gazemix.training.data.build_data` with ``label_gaze=True``):
mixers are given only the guide half (as ``gaze=``, and as ``saliency=`` to saliency mixers), labels come only
from the evaluation half. The split applies to every mixer, so the gaze labels of different mixers come from
the same observers and can be compared.

Weights of every output sum to 1 (the perceived share is in [0, 1]; gaze shares are ratios of non-negative
masses), so targets sum to 1 whenever each one-hot does (label smoothing keeps that).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import torch
from torch import Tensor

from gazemix.contract import MixResult, MixSource, soft_targets

__all__ = ["LABEL_SOURCES", "GazeLabels", "HumanLabels", "LabelSource", "make_label_source", "reweight"]

LABEL_SOURCES = ("mixer", "human", "gaze")


def reweight(result: MixResult, weights: Tensor, labels: Tensor, num_classes: int, smoothing: float,
             changed: Tensor | None = None) -> MixResult:
    """``result`` with source weights ``weights (B', S)`` and the targets rebuilt from them (see module docstring);
    outputs where ``changed (B',)`` is False keep the mixer's weights and targets exactly."""
    soft = soft_targets(labels, num_classes, smoothing).to(weights.device)
    weights = weights.to(torch.float32)
    targets = sum(weights[:, s, None] * soft[src.index] for s, src in enumerate(result.sources))
    if changed is not None:
        weights = torch.where(changed.view(-1, 1), weights, _weights(result.sources))
        targets = torch.where(changed.view(-1, 1), targets, result.targets)
    sources = tuple(dataclasses.replace(src, weight=weights[:, s]) for s, src in enumerate(result.sources))
    return dataclasses.replace(result, targets=targets, sources=sources)


def _weights(sources: tuple[MixSource, ...]) -> Tensor:
    return torch.stack([src.weight.to(torch.float32) for src in sources], dim=1)


class LabelSource:
    """Relabels mixed samples (``relabel(result, labels, label_gaze)`` → result, fallbacks); see the module docstring.

    Args:
        num_classes: ``K``.
        smoothing: label smoothing of each one-hot (timm's rule, as the mixers apply it).
    """

    name = "mixer"
    needs_label_gaze = False

    def __init__(self, num_classes: int, smoothing: float = 0.0) -> None:
        self.num_classes, self.smoothing = int(num_classes), float(smoothing)

    def relabel(self, result: MixResult, labels: Tensor, label_gaze: Tensor | None = None) -> tuple[MixResult, Tensor]:
        """The relabelled mix and the number of outputs that kept the mixer's weights (a 0-dim tensor, no sync)."""
        return result, torch.zeros((), dtype=torch.long, device=result.targets.device)


class HumanLabels(LabelSource):
    """Perceived share ``f(lam)`` of the own image from a calibration fit (``share``: a monotone map on [0, 1])."""

    name = "human"

    def __init__(self, num_classes: int, smoothing: float, share: Callable[[Tensor], Tensor]) -> None:
        super().__init__(num_classes, smoothing)
        self.share = share

    def relabel(self, result: MixResult, labels: Tensor, label_gaze: Tensor | None = None) -> tuple[MixResult, Tensor]:
        w = _weights(result.sources)
        own, partners = w[:, 0], w[:, 1:]
        rest = partners.sum(dim=1)
        total = own + rest
        ok = total > 0
        lam = torch.where(ok, own / total.clamp_min(1e-12), torch.full_like(own, 0.5))
        perceived = self.share(lam).to(w.dtype)
        split = torch.where(rest.view(-1, 1) > 0, partners / rest.clamp_min(1e-12).view(-1, 1),
                            torch.full_like(partners, 1.0 / partners.shape[1]))
        new = torch.cat([perceived.view(-1, 1), (1 - perceived).view(-1, 1) * split], dim=1)
        return reweight(result, new, labels, self.num_classes, self.smoothing, ok), (~ok).sum()


class GazeLabels(LabelSource):
    """Each source's share of the held-out gaze mass kept in the mixed image."""

    name = "gaze"
    needs_label_gaze = True

    def relabel(self, result: MixResult, labels: Tensor, label_gaze: Tensor | None = None) -> tuple[MixResult, Tensor]:
        if label_gaze is None:
            raise ValueError("gaze labels need the held-out gaze maps of the batch (label_gaze=)")
        has_gaze = label_gaze.sum(dim=(1, 2, 3)) > 0
        masses = result.replay_sources(label_gaze).to(torch.float32)
        total = masses.sum(dim=1)
        seen = torch.stack([has_gaze[src.index] for src in result.sources], dim=1).all(dim=1)
        ok = seen & (total > 0)
        new = masses / total.clamp_min(1e-12).view(-1, 1)
        return reweight(result, new, labels, self.num_classes, self.smoothing, ok), (~ok).sum()


def make_label_source(name: str, num_classes: int, smoothing: float, *, calibration: str | os.PathLike | None = None,
                      curve: str | None = None) -> LabelSource:
    """The label source called ``name``; ``human`` reads ``curve``'s fit from ``calibration``."""
    if name not in LABEL_SOURCES:
        raise ValueError(f"--label-source must be one of {', '.join(LABEL_SOURCES)}, got {name!r}")
    if name != "human" and calibration is not None:
        raise ValueError(f"--calibration is read with --label-source human only (this run: {name})")
    if name == "human":
        if calibration is None:
            raise ValueError("--label-source human needs --calibration FIT.json (written by `gazemix humans "
                             "calibrate`)")
        from gazemix.study.calibration import CalibrationError, PerceivedShare

        try:
            return HumanLabels(num_classes, smoothing, PerceivedShare(calibration, curve))
        except CalibrationError as err:
            raise ValueError(f"--calibration: {err}" + (" (or pass --calibration-mixer NAME to use another "
                                                        "mixer's curve)" if "has no curve" in str(err) else "")) \
                from None
    return GazeLabels(num_classes, smoothing) if name == "gaze" else LabelSource(num_classes, smoothing)
