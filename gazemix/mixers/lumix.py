"""LUMix (Sun, Chen, He, Yuille, Torr, Bai, "LUMix: Improving Mixup by Better Modelling Label
Uncertainty", arXiv 2211.15846, 2022).

LUMix "models label uncertainty by adding label perturbation during training" on top of Mixup/CutMix
(abstract). No code was released; this wrapper implements a documented, parameterised candidate of the
perturbation — marked experimental (docs/methods/lumix.md) — and leaves the images and their replay exactly as
the base mixer made them:

1. ``lam' = clip(lam + eps, 0, 1)`` with ``eps ~ U(-noise, noise)`` per sample (label perturbation);
2. optionally, after the forward pass (``relabel(result, logits=...)``), blend with the model's own
   estimate ``lam_pred = p[y_i] / (p[y_i] + p[y_j])``: ``lam'' = (1 - pred_weight) lam' + pred_weight lam_pred``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
from torch import Tensor

from gazemix.contract import Mixer, MixResult, check_range
from gazemix.registry import mixer_class, register_mixer


@register_mixer
class LUMix(Mixer):
    """Label perturbation on top of any pair mixer (experimental: paper formula unverified).

    Args:
        base: registered name of the mixer that makes the images (default ``"cutmix"``).
        base_options: keyword options for the base mixer.
        noise: half-width of the uniform perturbation of ``lam`` (default 0.1).
        pred_weight: weight of the model's prediction-derived ``lam`` in :meth:`relabel` (default 0: off).
    """

    name = "lumix"
    summary = "label perturbation on top of any mixer (experimental: no official code)"
    reference = "Sun et al., LUMix: Improving Mixup by Better Modelling Label Uncertainty, arXiv 2211.15846, 2022"

    def __init__(self, *, base: str = "cutmix", base_options: Mapping[str, Any] | None = None, noise: float = 0.1,
                 pred_weight: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        cls = mixer_class(base)
        if cls is LUMix:
            raise ValueError("lumix cannot wrap itself: choose base='cutmix', 'mixup', ...")
        check_range("noise", noise, 0.0, 1.0)
        check_range("pred_weight", pred_weight, 0.0, 1.0)
        self.base = cls(**dict(base_options or {}), **kwargs)
        self.noise, self.pred_weight = float(noise), float(pred_weight)
        self.needs = self.base.needs
        self.content_independent = self.base.content_independent and self.pred_weight == 0
        self.model_kind = self.base.model_kind or ("any" if self.pred_weight > 0 else None)
        self.relabels_after_forward = self.pred_weight > 0

    @property
    def reads_gaze(self) -> bool:
        return self.base.reads_gaze

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        base_params = self.base.sample(images, targets, generator=generator, **context)
        eps = (torch.rand(images.shape[0], generator=generator) * 2 - 1) * self.noise
        return {"base": base_params, "eps": eps}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        result = self.base.apply(images, targets, params["base"])
        lam = (result.lam + params["eps"].to(result.lam.device)).clamp(0.0, 1.0)
        return self._with_lam(result, targets, lam, dict(params, base_lam=result.lam.cpu()))

    def relabel(self, result: MixResult, **outputs: Any) -> MixResult:
        if self.pred_weight == 0:
            return result
        logits = outputs.get("logits")
        if logits is None:
            raise ValueError("lumix with pred_weight > 0 needs relabel(result, logits=...) after the forward pass")
        prob = logits.detach().float().softmax(dim=1)
        own_cls = result.params["own_class"].to(prob.device)
        partner_cls = result.params["partner_class"].to(prob.device)
        p_own = prob.gather(1, own_cls.view(-1, 1))[:, 0]
        p_partner = prob.gather(1, partner_cls.view(-1, 1))[:, 0]
        lam_pred = p_own / (p_own + p_partner).clamp_min(1e-12)
        lam = (1 - self.pred_weight) * result.lam + self.pred_weight * lam_pred.to(result.lam.device)
        return self._with_lam(result, None, lam, dict(result.params, lam_pred=lam_pred.cpu()))

    def _with_lam(self, result: MixResult, targets: Tensor | None, lam: Tensor, params: dict[str, Any]) -> MixResult:
        own, partner = result.sources[0], result.sources[1]
        base_soft = params.get("soft_targets")
        if targets is not None:
            base_soft = self.soft(targets, lam.device)
            params["own_class"] = base_soft[own.index].argmax(1).cpu()
            params["partner_class"] = base_soft[partner.index].argmax(1).cpu()
            params["soft_targets"] = base_soft
        new_targets = lam.view(-1, 1) * base_soft[own.index] + (1 - lam).view(-1, 1) * base_soft[partner.index]
        sources = (dataclasses.replace(own, weight=lam), dataclasses.replace(partner, weight=1 - lam),
                   *result.sources[2:])
        return dataclasses.replace(result, targets=new_targets, sources=sources, params=params, mixer=self.name)
