"""Co-Mixup (Kim, Choo, Jeong, Song, "Co-Mixup: Saliency Guided Joint Mixup with Supermodular Diversity",
ICLR 2021).

Batch-level mixing: the batch is cut into groups of ``m_part`` inputs (official: 20, contiguous), and each
group of ``n`` inputs yields ``n`` outputs. Every output is an ``grid x grid`` labelling: each block shows one
input. The labelling of the group minimises (paper Eq. 3, official ``match.py``)

    sum_o [ -saliency of the chosen blocks - eta log(alpha_k) + beta * (label changes between neighbours) ]
    + gamma * (supermodular diversity: pairs of outputs that use the same inputs, through the compatibility A)

with ``alpha ~ Dirichlet(2)`` over the inputs and ``A = (1 - omega) I + omega A_dist`` (``A_dist``: L1
distance between the saliency peaks of the inputs, normalised). It is solved as the paper's iterative
submodular minimisation: the supermodular term is made modular around the current solution (hard threshold
``tau``), and each output is relabelled in turn by an alpha-beta-swap graph cut (``gco``), for ``niter``
rounds, with the official resolution of identical outputs before the last round. Labels are the block shares
of each input (they sum to 1).

The diversity term made modular: with ``p`` the input counts of the other outputs and ``A p`` each input's
compatibility-weighted count, gazemix adds ``2 gamma [A p > tau] ⊙ (A p)`` to each input's cost (the threshold
applied to each input's own count). The official line ``(A @ p > thres).float() * A @ p`` is evaluated by Python
as ``((mask * A) @ p)`` (``*`` and ``@`` share one precedence and associate left): input ``i`` gets
``2 gamma sum_j A_ij [(A p)_j > tau] p_j``. ``official_parse=True`` computes that; the official "soft" threshold
variant, written with parentheses, is elementwise like the default (docs/methods/comixup.md).

Paper vs code: the paper's labelling is one-hot per block (each output pixel from exactly one input), which is
what this mixer does by default. The released code additionally lets a block show a 50/50 mix of two inputs
already used by the output from the second round on ("efficient extension to multi-label"): ``mixed_blocks=True``.
Outputs are aligned with inputs only by position: source 0 of output ``o`` is input ``o`` (possibly with share
0), sources ``1 .. m-1`` are the other inputs of its group in rotating order, so ``MixResult.replay`` and
``source_maps`` see every input that can appear in an output.
"""

from __future__ import annotations

from math import ceil
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gazemix.contract import MixResult, MixSource, check_range, upsample_cells
from gazemix.mixers.puzzlemix import import_gco
from gazemix.mixers.saliency_guided import SaliencyGuidedMixer
from gazemix.registry import register_mixer


def peak_distance(saliency: Tensor, kernel: int = 8) -> Tensor:
    """Official compatibility distance: L1 distance between the argmax of ``kernel``-pooled saliency, ``(B, B)``."""
    k = max(1, min(kernel, *saliency.shape[-2:]))
    z = F.avg_pool2d(saliency.float(), k, stride=1)[:, 0]
    flat = z.flatten(1).argmax(dim=1)
    yx = torch.stack([flat // z.shape[-1], flat % z.shape[-1]], dim=1).float()
    return (yx[:, None, :] - yx[None, :, :]).abs().sum(-1)


def _objective(cost: Tensor, onehot: Tensor, beta: float, gamma: float) -> float:
    """Co-Mixup objective without thresholding (official ``obj_fn``), for the stopping rule."""
    n_out, h, w, n_in = onehot.shape
    counts = onehot.reshape(n_out, h * w, n_in).sum(1)
    loss = (cost.permute(1, 2, 0).unsqueeze(0) * onehot).sum()
    loss = loss + beta / 2 * (((onehot[:, :-1] - onehot[:, 1:]) ** 2).sum() + ((onehot[:, :, :-1] - onehot[:, :, 1:]) ** 2).sum())
    loss = loss + gamma * ((counts.sum(0) ** 2).sum() - (counts ** 2).sum())
    return float(loss)


def _resolve_identical(assigned: Tensor) -> Tensor:
    """Official ``resolve_label``: extra cost that separates outputs using exactly the same inputs."""
    add = torch.zeros_like(assigned)
    dist = torch.clamp((assigned[:, None] - assigned[None, :]).abs().sum(-1), max=1.0)
    for i1, i2 in torch.triu(1.0 - dist, diagonal=1).nonzero().tolist():
        used = assigned[i1].nonzero()[:, 0]
        if len(used) > 1:
            add[i1, used[0]] = 1.0
            add[i2, used[1]] = 1.0
    return add


_PAIRS = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]], dtype=torch.float64)  # official soft_label
_PAIR_EDGES = np.array([[0.25, 0.25, 1.0], [0.25, 1.0, 0.25], [1.0, 0.25, 0.25]])


def _cut(gco: Any, unary: Tensor, pairwise: np.ndarray, beta: float) -> Tensor:
    """Alpha-beta-swap graph cut of one output: ``unary`` ``(L, h, w)`` → ``(h, w)`` label indices."""
    n_labels, h, w = unary.shape
    if n_labels == 1 or h * w == 1:
        return unary.flatten(1).argmin(0).view(h, w)
    labels = gco.cut_grid_graph(np.ascontiguousarray(unary.permute(1, 2, 0).numpy()), pairwise,
                                np.full((h - 1, w), beta), np.full((h, w - 1), beta), algorithm="swap")
    return torch.from_numpy(np.asarray(labels, dtype=np.int64).reshape(h, w))


def _relabel(gco: Any, unary: Tensor, used: Tensor, beta: float, mixed_blocks: bool) -> Tensor:
    """New ``(h, w, n)`` block shares of one output.

    Plain: a Potts graph cut over the ``n`` inputs (one-hot blocks). With ``mixed_blocks`` (the official code's
    "efficient extension to multi-label", from the second round on) extra labels show a 50/50 mix of two inputs
    the output already uses: one extra label for two used inputs, three (the pairs of the three most used) for more.
    """
    n = unary.shape[0]
    onehot = lambda lab, k: F.one_hot(lab, k).double()  # noqa: E731
    potts = np.ones((n, n)) - np.eye(n)
    assigned = used > 0
    k = int(assigned.sum())
    if not mixed_blocks or k < 2:
        return onehot(_cut(gco, unary, potts, beta), n)
    if k >= 3:
        assigned = torch.zeros_like(assigned)
        assigned[used.topk(3).indices] = True
    mix = _PAIRS if k >= 3 else torch.tensor([[0.5], [0.5]], dtype=torch.float64)
    extra = torch.einsum("ahw,am->mhw", unary[assigned], mix) - 5e-4
    pairwise = np.ones((n + mix.shape[1],) * 2) - np.eye(n + mix.shape[1])
    sel = assigned.numpy()
    edges = _PAIR_EDGES if k >= 3 else np.array([[0.25, 0.25]])
    pairwise[n:, :n][:, sel] = edges
    pairwise[:n, n:][sel, :] = edges.T
    labels = _cut(gco, torch.cat([unary, extra]), pairwise, beta)
    soft = torch.zeros(mix.shape[1], n, dtype=torch.float64)
    soft[:, assigned] = mix.T
    full = onehot(labels, n + mix.shape[1])
    return full[..., :n] + full[..., n:] @ soft


def modular_penalty(a: Tensor, penalty: Tensor, thres: float, official_parse: bool = False) -> Tensor:
    """The thresholded diversity penalty of each input ``(n,)`` before the factor ``2 gamma``.

    ``a`` ``(n, n)`` compatibility, ``penalty`` ``(n,)`` input counts of the other outputs. Default:
    ``[A p > thres] ⊙ (A p)``; ``official_parse``: ``([A p > thres] * A) @ p``, as Python evaluates the official code.
    """
    ap = a @ penalty
    mask = (ap > thres).to(ap.dtype)
    return (mask * a) @ penalty if official_parse else mask * ap


def comixup_labels(saliency: Tensor, a_dist: Tensor, *, generator: torch.Generator, alpha: float, beta: float,
                   gamma: float, eta: float, omega: float, thres: float, niter: int, resolve: bool = True,
                   mixed_blocks: bool = False, official_parse: bool = False) -> Tensor:
    """One group's labelling: ``(n, h, w, n)`` share of every input in every block of every output.

    Args:
        saliency: ``(n, h, w)`` block saliency of the group's inputs (non-negative).
        a_dist: ``(n, n)`` compatibility distances.
        generator: for the Dirichlet prior and the random initial labelling.
        mixed_blocks: allow 50/50 blocks after the first round (official code); one-hot blocks otherwise (paper).
        official_parse: the diversity threshold as Python evaluates the official code (:func:`modular_penalty`).
    """
    gco = import_gco()
    n, h, w = saliency.shape
    hw = h * w
    sal = saliency.double().cpu()
    cost = -sal / sal.flatten(1).sum(1).clamp_min(1e-300).view(n, 1, 1)
    a_dist = a_dist.double().cpu()
    a = (1 - omega) * torch.eye(n, dtype=torch.float64) + omega * a_dist / a_dist.sum().clamp_min(1e-300) * n
    thres, beta, gamma, eta = thres * hw, beta / hw, gamma / hw, eta / hw
    prior = torch._standard_gamma(torch.full((n,), float(alpha), dtype=torch.float64), generator=generator)
    cost = cost - eta * torch.log(prior / prior.sum() + 1e-8).view(n, 1, 1)
    shares = F.one_hot(torch.randint(0, n, (n, h, w), generator=generator), n).double()  # (n_out, h, w, n_in)
    penalty = shares.sum(dim=(0, 1, 2))
    add_cost = None
    loss_prev = _objective(cost, shares, beta, gamma)
    for it in range(niter):
        for o in range(n):
            used = shares[o].sum(dim=(0, 1))
            penalty = penalty - used
            unary = cost + (2 * gamma * modular_penalty(a, penalty, thres, official_parse)).view(n, 1, 1)
            if add_cost is not None:
                unary = unary + gamma * add_cost[o].view(n, 1, 1)
            shares[o] = _relabel(gco, unary, used, beta, mixed_blocks and it > 0)
            penalty = penalty + shares[o].sum(dim=(0, 1))
        if resolve and it == niter - 2:
            add_cost = _resolve_identical((shares.reshape(n, -1, n).sum(1) > 0).double())
        loss = _objective(cost, shares, beta, gamma)
        if abs(loss_prev - loss) / max(abs(loss), 1e-300) < 1e-6:
            break
        loss_prev = loss
    return shares


@register_mixer
class CoMixup(SaliencyGuidedMixer):
    """Batch-level mix: every output is a block-wise labelling over the inputs of its group.

    Args:
        alpha: Dirichlet concentration of the prior (official ``mixup_alpha``: 2.0).
        grid: blocks per side (official: 4); ``None`` draws ``2^U{1..4}`` per batch (official ``-1``).
        beta: label smoothness (official: 0.32).
        gamma: diversity weight (official: 1.0).
        eta: prior weight (official: 0.05).
        omega: compatibility weight (official: 0.001).
        thres: diversity threshold ``tau`` (official: 0.83).
        m_part: group size (official: 20).
        niter: rounds of the iterative minimisation (official default 4; the README suggests 3 for speed).
        resolve: separate identical outputs before the last round (official ``set_resolve``: True).
        mixed_blocks: let a block show a 50/50 mix of two inputs after the first round, as the released code
            does (default False: the paper's one-hot blocks, one input per pixel).
        official_parse: threshold the diversity term as Python evaluates the official code,
            ``((mask * A) @ p)``, instead of ``mask ⊙ (A @ p)`` (default; see the module docstring).
        saliency_source: ``"gradient"`` (the trained model's input gradients, ``model=``; the paper's and default) or
            any source of :class:`~gazemix.mixers.saliency_guided.SaliencyGuidedMixer`.
    """

    name = "comixup"
    summary = "batch-level: each output a block labelling over up to m inputs, saliency + diversity, label = block shares"
    reference = "Kim, Choo, Jeong, Song, Co-Mixup: Saliency Guided Joint Mixup with Supermodular Diversity, ICLR 2021"

    def __init__(self, *, alpha: float = 2.0, grid: int | None = 4, beta: float = 0.32, gamma: float = 1.0,
                 eta: float = 0.05, omega: float = 0.001, thres: float = 0.83, m_part: int = 20, niter: int = 4,
                 resolve: bool = True, mixed_blocks: bool = False, official_parse: bool = False,
                 saliency_source: str = "gradient",
                 **kwargs: Any) -> None:
        super().__init__(saliency_source=saliency_source, **kwargs)
        check_range("alpha", alpha, 0.0, float("inf"), lo_open=True, hi_open=True)
        if grid is not None and (not isinstance(grid, int) or grid < 1):
            raise ValueError(f"grid must be a positive integer or None (random 2..16), got {grid!r}")
        for name, v in (("beta", beta), ("gamma", gamma), ("eta", eta), ("thres", thres)):
            check_range(name, v, 0.0, float("inf"), hi_open=True)
        check_range("omega", omega, 0.0, 1.0)
        for name, v in (("m_part", m_part), ("niter", niter)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.alpha, self.grid, self.beta, self.gamma, self.eta = float(alpha), grid, float(beta), float(gamma), float(eta)
        self.omega, self.thres, self.m_part, self.niter, self.resolve = float(omega), float(thres), m_part, niter, bool(resolve)
        self.mixed_blocks, self.official_parse = bool(mixed_blocks), bool(official_parse)

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b, (h, w) = images.shape[0], images.shape[-2:]
        n = self.grid if self.grid is not None else 2 ** int(torch.randint(1, 5, (1,), generator=generator))
        if n > min(h, w):
            raise ValueError(f"grid={n} blocks per side exceeds the image size {h}x{w}")
        sal = self.saliency(images, targets, context).detach()
        a_dist = peak_distance(sal)
        blocks = F.adaptive_avg_pool2d(sal.double(), n)[:, 0]
        m = min(self.m_part, b)
        shares = torch.zeros(b, n, n, m, dtype=torch.float64)
        for g in range(ceil(b / self.m_part)):  # groups are independent problems (official partition)
            s = slice(g * self.m_part, min(b, (g + 1) * self.m_part))
            size = s.stop - s.start
            shares[s, :, :, :size] = comixup_labels(
                blocks[s], a_dist[s, s], generator=generator, alpha=self.alpha, beta=self.beta, gamma=self.gamma,
                eta=self.eta, omega=self.omega, thres=self.thres, niter=self.niter, resolve=self.resolve,
                mixed_blocks=self.mixed_blocks, official_parse=self.official_parse)
        return {"grid": n, "block_shares": shares.float()}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        b, _, h, w = images.shape
        dev, dt = images.device, images.dtype
        block_share = params["block_shares"].to(dev, dt)  # (B, n, n, m): share of each local input in each block
        m = block_share.shape[-1]
        pos = torch.arange(b, device=dev)
        start = pos // self.m_part * self.m_part
        size = (start + self.m_part).clamp(max=b) - start
        local = pos - start
        n = block_share.shape[1]
        weights = block_share.flatten(1, 2).double().mean(1).float()  # (B, m) block shares
        soft = self.soft(targets, dev)
        sources, feeds = [], []
        for s in range(m):  # slot s of output o is local input (o + s) mod group size
            slot = (local + s) % size
            used = s < size
            idx = torch.where(used, start + slot, pos)
            slot_share = block_share.gather(3, slot.view(-1, 1, 1, 1).expand(b, n, n, 1))[..., 0] * used.view(-1, 1, 1)
            # pixels as nearest upsampling makes them (the official code's); the block shares themselves go with
            # them whenever that layout is the standard grid, so replay sums blocks instead of pixels
            share, cells = upsample_cells(slot_share, (h, w))
            weight = torch.where(used, weights.gather(1, slot.view(-1, 1))[:, 0], torch.zeros_like(weights[:, 0]))
            sources.append(MixSource(idx, share, weight, cells=cells))
            feeds.append(torch.nonzero(slot_share.flatten(1).any(dim=1)).flatten())  # the outputs this slot feeds
        mixed = torch.zeros_like(images)
        for src, rows in zip(sources, feeds):  # most outputs draw on a few of the m slots: touch only those outputs
            if rows.numel():
                mixed[rows] += src.share[rows] * images[src.index[rows]]
        mixed_targets = sum(src.weight.view(-1, 1) * soft[src.index] for src in sources)
        if m == 1:  # a batch of one: the lone output is its input; add an empty partner slot for the pair view
            sources.append(MixSource(pos, torch.zeros_like(sources[0].share), torch.zeros_like(sources[0].weight)))
        return MixResult(images=mixed, targets=mixed_targets, sources=tuple(sources), params=dict(params), mixer=self.name)
