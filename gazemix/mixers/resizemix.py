"""ResizeMix (Qin, Fang, Chen, Huang, Wang, "ResizeMix: Mixing Data with Preserved Object Information and
True Labels", arXiv 2012.11101, 2020).

Official code: JayQine/ResizeMix ``run_apis/trainer.py``: one scale ``tau ~ U(0.1, 0.8)`` per batch, the
whole partner shrunk with ``F.interpolate`` (nearest) to ``int(H * tau) x int(W * tau)`` and pasted at a
random position per sample that keeps it inside the image; label ``lam = 1 - pasted area / (H W)``.
Replay shrinks the partner's gaze map mass-preservingly: the whole partner stays visible, only smaller.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from gazemix.contract import BoxWarp, Mixer, MixResult, check_pairing, check_range
from gazemix.mixers.boxes import box_area_fraction, boxes_to_mask
from gazemix.registry import register_mixer


@register_mixer
class ResizeMix(Mixer):
    """Paste the whole partner, shrunk by ``tau``, at a random position; label ``1 - tau^2`` (exact area).

    Args:
        scale_range: ``(lo, hi)`` of the uniform scale ``tau`` (official: 0.1, 0.8).
        pairing: ``"randperm"`` (official), ``"flip"`` or ``"roll"``.
        interpolation: ``"nearest"`` (official ``F.interpolate`` default) or ``"bilinear"``.
    """

    name = "resizemix"
    summary = "paste the whole partner shrunk by tau at a random place, label 1 - tau^2"
    reference = "Qin et al., ResizeMix: Mixing Data with Preserved Object Information and True Labels, arXiv 2012.11101"

    def __init__(self, *, scale_range: tuple[float, float] = (0.1, 0.8), pairing: str = "randperm",
                 interpolation: str = "nearest", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        lo, hi = scale_range
        check_range("scale_range[0]", lo, 0.0, 1.0, lo_open=True)
        check_range("scale_range[1]", hi, lo, 1.0)
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
        check_pairing(pairing)
        self.scale_range, self.pairing, self.interpolation = (float(lo), float(hi)), pairing, interpolation

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b, (h, w) = images.shape[0], images.shape[-2:]
        lo, hi = self.scale_range
        tau = lo + (hi - lo) * torch.rand(1, generator=generator).item()
        ph, pw = max(1, int(h * tau)), max(1, int(w * tau))
        cy = torch.randint(0, h, (b,), generator=generator)
        cx = torch.randint(0, w, (b,), generator=generator)
        y1 = (cy - ph // 2).clamp(0, h - ph)  # shifted so the whole shrunk image stays inside
        x1 = (cx - pw // 2).clamp(0, w - pw)
        boxes = torch.stack([y1, x1, y1 + ph, x1 + pw], dim=1)
        return {"tau": tau, "boxes": boxes, "index": self.partners(b, generator, self.pairing, context)}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        b, (h, w) = images.shape[0], images.shape[-2:]
        index = params["index"].to(images.device)
        boxes = params["boxes"].to(images.device)
        full = torch.tensor([0, 0, h, w], device=images.device).expand(b, 4)
        warp = BoxWarp(src=full, dst=boxes, mode=self.interpolation)
        ph, pw = int(boxes[0, 2] - boxes[0, 0]), int(boxes[0, 3] - boxes[0, 1])
        # Shrink every image once at the pasted size (the warp's sampling, evaluated inside its box only),
        # then paste each partner at its own position with one advanced-indexing assignment.
        corner = torch.tensor([[0, 0, h, w]], device=images.device)
        shrink = BoxWarp(src=corner, dst=torch.tensor([[0, 0, ph, pw]], device=images.device), mode=self.interpolation)
        small = shrink.apply_at(images, (ph, pw))[index]
        mixed = images.clone()
        rows = boxes[:, 0:1] + torch.arange(ph, device=images.device)
        cols = boxes[:, 1:2] + torch.arange(pw, device=images.device)
        batch = torch.arange(b, device=images.device).view(-1, 1, 1)
        mixed[batch, :, rows[:, :, None], cols[:, None, :]] = small.permute(0, 2, 3, 1)
        inside = boxes_to_mask(boxes, (h, w))
        lam = (1.0 - box_area_fraction(boxes, (h, w))).float()
        return self.pair_result(images, mixed, targets, index, ~inside, lam, params,
                                partner_warp=warp, partner_box=boxes)
