"""Training losses: soft-target cross-entropy and the SMMix / TdAttenMix auxiliary terms.

SMMix (Chen et al., ICCV 2023) and TdAttenMix (Wang, Gu, Lu, AAAI 2025) add, on their region-mixed batches
(official code, ``engine.py``, all weights 1):

* a consistency term ``KL(softmax(q_i) || softmax(z_i))`` with ``q_i = lam_i p_i + (1 - lam_i) p_j`` the
  model's own eval-mode, no-grad logits on the *clean* batch mixed in logit space (``KLDivLoss(batchmean)``);
* for ViTs, a fine-grained term ``1/2 [CE(h(own tokens), y_i) + CE(h(pasted tokens), y_j)]`` where ``h`` is a
  second linear head on the mean of the final patch tokens of each region, with smoothed one-hot labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gazemix.contract import MixResult

__all__ = ["TokenHead", "consistency_kl", "fine_grained_ce", "region_token_masks", "soft_target_ce"]


def soft_target_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """``mean_i sum_c -t_ic log softmax(z_i)_c`` (timm ``SoftTargetCrossEntropy``); targets ``(B, K)``."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def consistency_kl(logits: Tensor, clean_logits: Tensor, result: MixResult) -> Tensor:
    """``KL(softmax(q) || softmax(z))``, batch mean, with ``q = lam * p[own] + (1 - lam) * p[partner]``.

    Args:
        logits: the training forward's logits ``z`` on the mixed batch ``(B, K)``.
        clean_logits: the model's eval-mode logits ``p`` on the clean batch ``(B, K)`` (no gradient).
        result: the mix (``lam``, own and partner indices).
    """
    p = clean_logits.detach().float()
    lam = result.lam.to(p).view(-1, 1)
    q = lam * p[result.own_index] + (1.0 - lam) * p[result.index]
    return F.kl_div(F.log_softmax(logits.float(), dim=-1), F.softmax(q, dim=-1), reduction="batchmean")


def region_token_masks(result: MixResult, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Boolean ``(B, N)`` masks of the patch tokens that show the own image and the pasted partner.

    A token belongs to the region holding the majority of its pixels (exact for patch-aligned mixes).
    """
    share = F.adaptive_avg_pool2d(result.mask.float(), grid).flatten(1)
    own = share > 0.5
    return own, ~own


class TokenHead(nn.Module):
    """SMMix's ``token_head``: a linear classifier on the mean of the final patch tokens inside a region."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """``tokens (B, N, D)``, ``mask (B, N)`` → logits ``(B, K)`` of the masked mean (an empty region gives 0)."""
        m = mask.to(tokens.dtype).unsqueeze(-1)
        pooled = (tokens * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
        return self.fc(pooled)


def fine_grained_ce(head: TokenHead, tokens: Tensor, result: MixResult, own_targets: Tensor,
                    grid: tuple[int, int]) -> Tensor:
    """``1/2 [CE(h(own region), y_own) + CE(h(pasted region), y_partner)]`` with soft ``own_targets (B, K)``."""
    own, pasted = region_token_masks(result, grid)
    z_own = head(tokens, own)
    z_src = head(tokens, pasted)
    return 0.5 * (soft_target_ce(z_own, own_targets[result.own_index]) + soft_target_ce(z_src, own_targets[result.index]))
