"""PuzzleMix (Kim, Choo, Song, "Puzzle Mix: Exploiting Saliency and Local Statistics for Optimal Mixup",
ICML 2020).

Paper and official code (snu-mllab/PuzzleMix ``mixup.py``: ``mixup_graph``, ``graphcut_multi``,
``mask_transport``): input-gradient saliency of the clean batch (``sqrt(mean_c grad^2)``) is average-pooled to
an ``n x n`` block grid (``n = 2^U{1..4}`` per batch) and normalised to sum 1. A multi-label mask (``n_labels``
levels, default 3: values ``{0, 1/2, 1}``) is found per sample by an alpha-beta-swap graph cut (``gco``,
the library the official code uses) over the energy

    - saliency kept + beta' * label smoothness (1 + gamma * local image discontinuity) + eta * prior(lam),

with ``beta' = beta / n / 16`` and the discontinuity measured on ``neigh_size``-pooled pixels across block
boundaries, exactly as the official code builds its unary and edge terms. Then each image's blocks are
transported (optimal-transport step): a block plan, a partial permutation, moves salient blocks into the
region the mask gives that image (cost ``t_eps * squared block distance / (n-1)^2 - saliency * [mask > 0]``,
resolved by ``n`` rounds of row-wise choice and column-wise conflict resolution, losers penalised by 1).
``x' = M * T_own(x_i) + (1 - M) * T_partner(x_j)``, label ``lam = mean(M)``.

Transport rounds: each round penalises the losers of the column resolution (``+1`` on their cost), as the paper's
algorithm and the official ``mask_transport`` since 1 December 2020 (commit bf4bf04) do. The July 2020 release
(commit a778e48) added the penalty after the loop, so every round repeated the first; ``official_transport=True``
reproduces that version. The official transport also runs at ``t_size`` resolution; here it runs at the block
resolution (the official default ``t_size=-1``). Graph-cut energies are the official ones divided by 1000, as
int32 (:func:`graphcut_mask`), so they fit on every grid (docs/methods/puzzlemix.md). The training-loop extras (adversarial noise ``adv_p``, clean loss
``clean_lam``) belong to the trainer. Pairwise terms use the pixels as given (the official code de-normalises
to ``[0, 1]`` first: pass images in ``[0, 1]`` for the same scale). Sizes that are not multiples of ``n``
use the largest ``n x n`` grid of equal blocks; the remainder strip follows the last block row/column in the
mask and is not transported.
"""

from __future__ import annotations

from math import comb
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gazemix.contract import MixResult, MixSource, check_pairing, check_range, sample_beta
from gazemix.mixers.saliency_guided import SaliencyGuidedMixer
from gazemix.registry import register_mixer
from gazemix.warps import BlockTransportWarp, identity_transport


def import_gco() -> Any:
    """The ``gco`` graph-cut module (PyPI ``gco-wrapper``, the library of the official PuzzleMix/Co-Mixup code)."""
    try:
        import gco
    except ImportError as err:
        raise ImportError("PuzzleMix and Co-Mixup need the gco graph-cut library: pip install gco-wrapper") from err
    return gco


def block_distance(n: int, device: torch.device | None = None) -> Tensor:
    """Squared distance between the ``n x n`` blocks (row-major), divided by ``(n - 1)^2``: ``(n*n, n*n)``."""
    r = torch.arange(n * n, device=device)
    yy, xx = r // n, r % n
    d = (yy[:, None] - yy[None, :]) ** 2 + (xx[:, None] - xx[None, :]) ** 2
    return d.float() / max(n - 1, 1) ** 2


def neigh_penalty(a: Tensor, b: Tensor, kh: int, kw: int) -> tuple[Tensor, Tensor]:
    """Mean absolute difference across block boundaries between pooled images ``a`` above/left and ``b``.

    ``a``, ``b``: ``(B, C, n*kh, n*kw)``. Returns vertical ``(B, n-1, n)`` and horizontal ``(B, n, n-1)`` terms.
    """
    pw_x = (a[:, :, :-1, :] - b[:, :, 1:, :])[:, :, kh - 1::kh, :]
    pw_y = (a[:, :, :, :-1] - b[:, :, :, 1:])[:, :, :, kw - 1::kw]
    return (F.avg_pool2d(pw_x.abs().mean(1), kernel_size=(1, kw)), F.avg_pool2d(pw_y.abs().mean(1), kernel_size=(kh, 1)))


def graphcut_mask(unary_partner: np.ndarray, unary_own: np.ndarray, pw_x: np.ndarray, pw_y: np.ndarray,
                  lam: float, beta: float, eta: float, n_labels: int) -> np.ndarray:
    """One sample's ``n x n`` mask (own share, ``n_labels`` levels) by alpha-beta swap, as ``graphcut_multi``.

    The official code hands ``gco`` int32 unaries and edge weights (scaled by ``1000 n^2``, truncated) with a
    float32 label cost, which puts gco-wrapper in its float mode: it multiplies unaries by 1e5, edge weights by 1e3
    and label costs by 100 (truncating to int32), and on 16 x 16 grids the unaries overflow int32 (they wrap
    silently). Here exactly those energies divided by 1000 are passed as int32 — unaries ``trunc(1000 n^2 u) *
    100``, edge weights ``trunc(1000 n^2 (pw + beta))``, label costs ``trunc(100 (i - j)^2 / (L - 1)^2)`` — so the
    cut is the official one wherever the official energies fit, and every term fits int32 on every grid.
    """
    gco = import_gco()

    n = unary_own.shape[0]
    large = 1000 * n ** 2
    levels = np.linspace(0.0, 1.0, n_labels)  # partner share of each label
    counts = np.array([comb(n_labels - 1, i) for i in range(n_labels)], dtype=np.float64)
    binom = counts * lam ** (n_labels - 1 - np.arange(n_labels)) * (1 - lam) ** np.arange(n_labels)
    prior = eta * -np.log(binom + 1e-8) / n ** 2
    unary = np.stack([(1 - s) * unary_partner + s * unary_own + prior[i] for i, s in enumerate(levels)], axis=-1)
    i = np.arange(n_labels)
    label_cost = np.trunc(100 * (i[:, None] - i[None, :]) ** 2 / (n_labels - 1) ** 2)
    labels = gco.cut_grid_graph(_int32(np.trunc(large * unary) * 100, "unary"), _int32(label_cost, "label"),
                                _int32(np.trunc(large * (pw_x + beta)), "edge"),
                                _int32(np.trunc(large * (pw_y + beta)), "edge"), algorithm="swap")
    return 1.0 - np.asarray(labels, dtype=np.float64).reshape(n, n) / (n_labels - 1)


def _int32(energy: np.ndarray, what: str) -> np.ndarray:
    """``energy`` (integral float values) as int32; values that do not fit are an error, never a wrapped cast."""
    if not np.all(np.abs(energy) <= np.iinfo(np.int32).max):
        raise ValueError(f"PuzzleMix's {what} energies exceed int32 (largest {np.abs(energy).max():.3g}): pass images "
                         f"in [0, 1] and non-negative saliency")
    return energy.astype(np.int32)


def transport_sources(mask: Tensor, unary: Tensor, eps: float, *, iterative: bool = True) -> Tensor:
    """PuzzleMix's block transport: ``(B, n*n)`` source block of each destination block (-1: none).

    ``mask`` ``(B, n, n)`` is the share this image gets, ``unary`` ``(B, n, n)`` its normalised block saliency.
    The plan is a partial permutation (each source and each destination used at most once).
    """
    b, n, _ = mask.shape
    nn = n * n
    z = (mask > 0).to(unary.dtype).reshape(b, 1, nn)
    cost = eps * block_distance(n, unary.device).to(unary.dtype) - unary.reshape(b, nn, 1) * z
    for _ in range(n):
        plan = F.one_hot(cost.argmin(dim=2), nn).to(cost.dtype)  # each source row picks its best destination
        winner = (plan * cost).argmin(dim=1)  # per destination, the cheapest claimant (0 when unclaimed)
        win = F.one_hot(winner, nn).transpose(1, 2).to(cost.dtype) * plan
        if iterative:
            cost = cost + (1 - win) * plan
    taken = win.sum(dim=1) > 0
    return torch.where(taken, win.argmax(dim=1), torch.full_like(winner, -1))


@register_mixer
class PuzzleMix(SaliencyGuidedMixer):
    """Graph-cut block mask over saliency and smoothness, plus optimal block transport of both images.

    Args:
        alpha: Beta(alpha, alpha) for the prior ``lam`` (official: 1.0).
        block_choices: block-grid sizes ``n`` drawn uniformly per batch (official: 2, 4, 8, 16).
        beta: label smoothness (official: 1.2).
        gamma: data smoothness (official: 0.5).
        eta: prior weight (official: 0.2).
        neigh_size: pooling of pixels for the data term (official: 4).
        n_labels: mask levels (official: 3 → ``{0, 1/2, 1}``; 2 gives a binary mask).
        transport: transport blocks (official: True).
        t_eps: transport distance weight (official: 0.8).
        official_transport: the July 2020 official transport (the loser penalty after the loop, so every round
            repeats the first); default False: the current official code and the paper (penalty in every round).
        saliency_source: ``"gradient"`` (the trained model's input gradients, ``model=``; the paper's and default) or
            any source of :class:`~gazemix.mixers.saliency_guided.SaliencyGuidedMixer`.
        pairing: ``"randperm"`` (official), ``"flip"`` or ``"roll"``.
    """

    name = "puzzlemix"
    summary = "graph-cut saliency mask ({0, 1/2, 1} blocks) plus optimal block transport, label mask mean"
    reference = "Kim, Choo, Song, Puzzle Mix: Exploiting Saliency and Local Statistics for Optimal Mixup, ICML 2020"
    reads_pixels = True  # the smoothness term reads the pixels, whatever the saliency source

    def __init__(self, *, alpha: float = 1.0, block_choices: tuple[int, ...] = (2, 4, 8, 16), beta: float = 1.2,
                 gamma: float = 0.5, eta: float = 0.2, neigh_size: int = 4, n_labels: int = 3, transport: bool = True,
                 t_eps: float = 0.8, official_transport: bool = False, saliency_source: str = "gradient",
                 pairing: str = "randperm", **kwargs: Any) -> None:
        super().__init__(saliency_source=saliency_source, **kwargs)
        check_range("alpha", alpha, 0.0, float("inf"), lo_open=True, hi_open=True)
        if not block_choices or any(not isinstance(n, int) or n < 2 for n in block_choices):
            raise ValueError(f"block_choices must be integers >= 2, got {block_choices!r}")
        for name, v in (("beta", beta), ("gamma", gamma), ("eta", eta), ("t_eps", t_eps)):
            check_range(name, v, 0.0, float("inf"), hi_open=True)
        if not isinstance(neigh_size, int) or neigh_size < 1:
            raise ValueError(f"neigh_size must be a positive integer, got {neigh_size!r}")
        if n_labels not in (2, 3, 4):
            raise ValueError(f"n_labels must be 2, 3 or 4 (as the official code), got {n_labels!r}")
        check_pairing(pairing)
        self.alpha, self.block_choices = float(alpha), tuple(block_choices)
        self.beta, self.gamma, self.eta, self.neigh_size = float(beta), float(gamma), float(eta), neigh_size
        self.n_labels, self.transport, self.t_eps = n_labels, bool(transport), float(t_eps)
        self.official_transport, self.pairing = bool(official_transport), pairing

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b, (h, w) = images.shape[0], images.shape[-2:]
        choices = [n for n in self.block_choices if n <= min(h, w)]
        if not choices:
            raise ValueError(f"block_choices {self.block_choices} are all larger than the image side {min(h, w)}")
        n = choices[int(torch.randint(0, len(choices), (1,), generator=generator))]
        lam = float(sample_beta(self.alpha, 1, generator))
        index = self.partners(b, generator, self.pairing, context)
        sal = self.saliency(images, targets, context).detach()

        bh, bw = h // n, w // n
        region = (slice(None), slice(None), slice(0, n * bh), slice(0, n * bw))
        pooled = F.avg_pool2d(sal[region].double(), (bh, bw))[:, 0]  # (B, n, n)
        unary_own = pooled / pooled.flatten(1).sum(1).clamp_min(1e-300).view(-1, 1, 1)
        idx = index.to(images.device)
        unary_partner = unary_own[idx]
        neigh = min(self.neigh_size, bh, bw)
        kh, kw = max(1, bh // neigh), max(1, bw // neigh)
        pix = F.adaptive_avg_pool2d(images[region].detach().double(), (n * kh, n * kw))
        own_pix, partner_pix = pix, pix[idx]
        beta = self.beta / n / 16
        pairs = {(a, c): neigh_penalty(pa, pc, kh, kw) for a, pa in ((0, partner_pix), (1, own_pix))
                 for c, pc in ((0, partner_pix), (1, own_pix))}
        pw_x = {k: beta * self.gamma * v[0] for k, v in pairs.items()}
        pw_y = {k: beta * self.gamma * v[1] for k, v in pairs.items()}
        u_own, u_partner = unary_own.clone(), unary_partner.clone()  # official: unary1 = own, unary2 = partner
        u_partner[:, :-1, :] += (pw_x[1, 0] + pw_x[1, 1]) / 2
        u_own[:, :-1, :] += (pw_x[0, 1] + pw_x[0, 0]) / 2
        u_partner[:, 1:, :] += (pw_x[0, 1] + pw_x[1, 1]) / 2
        u_own[:, 1:, :] += (pw_x[1, 0] + pw_x[0, 0]) / 2
        u_partner[:, :, :-1] += (pw_y[1, 0] + pw_y[1, 1]) / 2
        u_own[:, :, :-1] += (pw_y[0, 1] + pw_y[0, 0]) / 2
        u_partner[:, :, 1:] += (pw_y[0, 1] + pw_y[1, 1]) / 2
        u_own[:, :, 1:] += (pw_y[1, 0] + pw_y[0, 0]) / 2
        edge_x = ((pw_x[1, 0] + pw_x[0, 1] - pw_x[1, 1] - pw_x[0, 0]) / 2).cpu().numpy()
        edge_y = ((pw_y[1, 0] + pw_y[0, 1] - pw_y[1, 1] - pw_y[0, 0]) / 2).cpu().numpy()
        u_own_np, u_partner_np = u_own.cpu().numpy(), u_partner.cpu().numpy()
        # the official code hands the partner's unary as "unary1" and the own image's as "unary2"
        mask = torch.from_numpy(np.stack([
            graphcut_mask(u_partner_np[i], u_own_np[i], edge_x[i], edge_y[i], lam, beta, self.eta, self.n_labels)
            for i in range(b)])).float()  # per-sample CPU graph cut: inherent to the method

        if self.transport:
            m, u_o, u_p = mask.to(unary_own.device), unary_own.float(), unary_partner.float()
            t_own = transport_sources(m, u_o, self.t_eps, iterative=not self.official_transport)
            t_partner = transport_sources(1 - m, u_p, self.t_eps, iterative=not self.official_transport)
        else:
            t_own = t_partner = torch.arange(n * n).expand(b, -1)
        return {"lam_prior": lam, "index": index, "grid": n, "block_mask": mask,
                "src_own": t_own.cpu(), "src_partner": t_partner.cpu()}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        b, _, h, w = images.shape
        dev, dt = images.device, images.dtype
        n = params["grid"]
        index = params["index"].to(dev)
        rows = (torch.arange(h, device=dev) // (h // n)).clamp(max=n - 1)
        cols = (torch.arange(w, device=dev) // (w // n)).clamp(max=n - 1)
        block_mask = params["block_mask"].to(dev, dt)
        share = block_mask.index_select(1, rows).index_select(2, cols).unsqueeze(1)  # (B, 1, H, W)
        # on a grid that divides the image the blocks are the standard grid cells: replay sums blocks
        cells = block_mask if h % n == 0 and w % n == 0 else None
        dst = identity_transport(b, n, (h, w), dev).dst
        warp_own = BlockTransportWarp(src=params["src_own"].to(dev), dst=dst)
        warp_partner = BlockTransportWarp(src=params["src_partner"].to(dev), dst=dst)
        mixed = share * warp_own.apply(images) + (1 - share) * warp_partner.apply(images[index])
        lam = share.flatten(1).double().mean(dim=1).float()
        own = MixSource(torch.arange(b, device=dev), share, lam, warp_own, cells=cells)
        partner = MixSource(index, 1 - share, 1 - lam, warp_partner, cells=None if cells is None else 1 - cells)
        soft = self.soft(targets, dev)
        mixed_targets = lam.view(-1, 1) * soft + (1 - lam).view(-1, 1) * soft[index]
        return MixResult(images=mixed, targets=mixed_targets, sources=(own, partner), params=dict(params), mixer=self.name)
