"""TransformMix's networks (Cheung & Yeung, "TransformMix: Learning Transformation and Mixing Strategies from
Data", arXiv 2403.12429, 2024; TMLR submission, final venue UNCONFIRMED). No official code was found.

Confirmed from the paper's abstract and published summaries: a *mixing module* made of a spatial transformer
network (a learned transformation of each input) and a mask prediction network (a per-pixel mixing mask), guided
by the class activation maps of a teacher trained on the target data, learned once in a search phase and then
used as a fixed augmentation to train a new model. Everything below that goes further is **UNCONFIRMED** (the
method section could not be read) and is our design, kept close to AutoMix where a choice was needed:

* transform family: similarity (scale ``2^±1``, rotation ``±30°``, shift ``±0.5`` of the half-side), bounded by
  ``tanh``; the localisation head starts at zero, i.e. the identity (as in Jaderberg et al., 2015);
* both networks see ``(x_i, s_i, x_j, s_j, λ)`` at a working resolution (32 px): images, teacher CAMs
  min-max scaled to [0, 1], and the target lambda as a constant plane; the mask network sees the *transformed*
  images and CAMs; its logits are upsampled bilinearly to the image and a sigmoid gives the own share;
* search loss: soft CE of the frozen teacher on the mixed batch against ``λ``-mixed labels, plus
  ``w · max(|mean(M_b) - λ_b| - margin, 0)`` per sample (without it the mask would keep the own image only);
* label weight ``λ`` (the drawn target), one per sample, ``λ ~ Beta(α, α)``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gazemix.contract import scale_to_mass

__all__ = ["AffineWarp", "MixingModule", "similarity_theta", "teacher_saliency"]


@dataclass(frozen=True)
class AffineWarp:
    """Show a source image through an affine sampling grid (``F.affine_grid``, ``align_corners=False``).

    Output pixel at normalised position ``p`` shows the source at ``src[b] @ (p, 1)``; positions that fall
    outside the source are 0. The fields are named ``src``/``dst`` so :meth:`gazemix.contract.MixResult.to`
    moves them like every other warp.

    Args:
        src: ``(B, 2, 3)`` the sampling affine (output → source, normalised coordinates).
        dst: ``(B, 2, 3)`` its inverse (source → output), used to find which source pixels are shown.
    """

    src: Tensor
    dst: Tensor

    @classmethod
    def from_theta(cls, theta: Tensor) -> "AffineWarp":
        full = torch.cat([theta, theta.new_tensor([0.0, 0.0, 1.0]).expand(theta.shape[0], 1, 3)], dim=1)
        return cls(src=theta, dst=torch.linalg.inv(full.double()).to(theta.dtype)[:, :2])

    def apply(self, x: Tensor) -> Tensor:
        """Warp pixels ``x (B, C, H, W)`` (bilinear, zeros outside the source)."""
        theta = self.src.to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def apply_density(self, g: Tensor) -> Tensor:
        """Warp a map ``(B, 1, H, W)`` so the output holds exactly the mass ``g`` has on the source pixels shown."""
        h, w = g.shape[-2:]
        shape = self.apply(g).clamp_min(0)
        ys = (torch.arange(h, device=g.device, dtype=g.dtype) + 0.5) / h * 2 - 1
        xs = (torch.arange(w, device=g.device, dtype=g.dtype) + 0.5) / w * 2 - 1
        pts = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w), torch.ones(h, w, device=g.device,
                                                                                            dtype=g.dtype)], dim=-1)
        out = torch.einsum("bij,hwj->bhwi", self.dst.to(device=g.device, dtype=g.dtype), pts)  # where each lands
        shown = (out.abs() <= 1).all(dim=-1).unsqueeze(1)
        return scale_to_mass(shape, (g * shown).sum(dim=(1, 2, 3)))

    def index_select(self, rows: Tensor) -> "AffineWarp":
        return dataclasses.replace(self, src=self.src[rows], dst=self.dst[rows])


def similarity_theta(a: Tensor, *, max_log2_scale: float = 1.0, max_rotation: float = math.pi / 6,
                     max_shift: float = 0.5) -> Tensor:
    """Raw outputs ``a (B, 4)`` → sampling affines ``(B, 2, 3)``; ``a = 0`` is the identity.

    Scale ``2^(max_log2_scale tanh a0)`` (below 1 zooms in), rotation ``max_rotation tanh a1``, shift
    ``max_shift tanh(a2, a3)`` in normalised coordinates.
    """
    scale = torch.exp2(max_log2_scale * torch.tanh(a[:, 0]))
    rot = max_rotation * torch.tanh(a[:, 1])
    shift = max_shift * torch.tanh(a[:, 2:4])
    cos, sin = scale * torch.cos(rot), scale * torch.sin(rot)
    row0 = torch.stack([cos, -sin, shift[:, 0]], dim=1)
    row1 = torch.stack([sin, cos, shift[:, 1]], dim=1)
    return torch.stack([row0, row1], dim=1)


class MixingModule(nn.Module):
    """Spatial transformer + mask prediction network (layout UNCONFIRMED; see the module docstring).

    Args:
        in_channels: image channels.
        work_size: side of the working resolution both networks run at.
        width: channels of the convolutions.
    """

    def __init__(self, in_channels: int = 3, *, work_size: int = 32, width: int = 32) -> None:
        super().__init__()
        if work_size < 4 or width < 1:
            raise ValueError(f"work_size must be >= 4 and width >= 1, got {work_size}, {width}")
        c = 2 * (in_channels + 1) + 1  # both images, both CAMs, the lambda plane
        self.work_size = int(work_size)
        self.localise = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 8))
        nn.init.zeros_(self.localise[-1].weight)
        nn.init.zeros_(self.localise[-1].bias)
        self.mask = nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 1))

    def forward(self, images: Tensor, saliency: Tensor, index: Tensor, lam: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(theta_own, theta_partner, own_share)``: affines ``(B, 2, 3)`` and the own share ``(B, 1, H, W)``."""
        b, _, h, w = images.shape
        s = self.work_size
        small = F.interpolate(torch.cat([images, saliency.to(images.dtype)], dim=1), size=(s, s), mode="bilinear",
                              align_corners=False, antialias=True)
        plane = lam.to(small).view(b, 1, 1, 1).expand(b, 1, s, s)
        pair = torch.cat([small, small[index], plane], dim=1)
        a = self.localise(pair)
        theta_i, theta_j = similarity_theta(a[:, :4]), similarity_theta(a[:, 4:])
        warped_i = AffineWarp(theta_i, theta_i).apply(small)  # dst unused by apply
        warped_j = AffineWarp(theta_j, theta_j).apply(small[index])
        logits = self.mask(torch.cat([warped_i, warped_j, plane], dim=1))
        own = torch.sigmoid(F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False))
        return theta_i, theta_j, own


def teacher_saliency(teacher: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """The teacher's class activation map of each image's label, min-max scaled to [0, 1], ``(B, 1, H, W)``.

    CNNs: CAM (Zhou et al., 2016; :func:`gazemix.attention.cam.class_activation_map`); ViTs: the last block's
    class-token attention over patches (our substitute: a ViT has no CAM), upsampled bilinearly.
    """
    from gazemix.attention.cam import class_activation_map
    from gazemix.attention.vit import patch_attention

    with torch.no_grad():
        if hasattr(teacher, "patch_embed"):
            _, grid = patch_attention(teacher, images)
            cam = F.interpolate(grid.unsqueeze(1).float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
        else:
            cam = class_activation_map(teacher, images, labels).float()
        lo = cam.amin(dim=(2, 3), keepdim=True)
        hi = cam.amax(dim=(2, 3), keepdim=True)
        return ((cam - lo) / (hi - lo).clamp_min(1e-12)).to(images.dtype)
