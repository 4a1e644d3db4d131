"""Training losses: soft-target cross-entropy and the SMMix / TdAttenMix auxiliary terms.

SMMix (Chen et al., ICCV 2023) and TdAttenMix (Wang, Gu, Lu, AAAI 2025) add, on their token-square batches
(official code, ``engine.py``, all weights 1; the Mixup batches of their switch get the soft CE only):

* the consistency term ``KL(softmax(q_i) || softmax(z_i))``, ``q_i = lam_i p_i + (1 - lam_i) p_j`` with ``p`` the
  model's own eval-mode, no-grad logits on the clean batch (:func:`gazemix.mixers.smmix.consistency_loss`);
* for ViTs, the fine-grained term ``1/2 [CE(h(own tokens), y_i) + CE(h(pasted tokens), y_j)]``, ``h`` a second
  linear head (SMMix's ``token_head``) on the mean final patch token of each region
  (:func:`gazemix.mixers.smmix.region_token_means`, :func:`~gazemix.mixers.smmix.fine_grained_loss`).
"""

from __future__ import annotations

from torch import Tensor, nn

from gazemix.contract import MixResult, soft_target_ce
from gazemix.mixers.smmix import consistency_loss, fine_grained_loss, region_token_means

__all__ = ["soft_target_ce", "square_mix_losses"]


def square_mix_losses(result: MixResult, logits: Tensor, clean_logits: Tensor, *, tokens: Tensor | None = None,
                      token_head: nn.Module | None = None, num_prefix_tokens: int = 1) -> dict[str, Tensor]:
    """The auxiliary terms of a token-square batch: ``consistency`` and, given tokens and a head, ``fine_grained``.

    Args:
        result: the mix (``params["use_square"]`` True).
        logits: the training forward's logits on the mixed batch ``(B, K)``.
        clean_logits: the eval-mode, no-grad logits of the clean batch ``(B, K)``.
        tokens: final tokens ``(B, P + N, D)`` of the same training forward (ViTs).
        token_head: the linear token head.
        num_prefix_tokens: ``P``.
    """
    out = {"consistency": consistency_loss(logits, result, clean_logits)}
    if tokens is not None and token_head is not None:
        own, pasted = region_token_means(tokens.float(), result, num_prefix_tokens)
        out["fine_grained"] = fine_grained_loss(token_head(own), token_head(pasted), result)
    return out
