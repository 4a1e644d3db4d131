"""Saliency-guided mixers: contract properties for every one, plus the method-specific checks (spec §5.1)."""

from __future__ import annotations

import math
from typing import Any, Callable

import cv2
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from gazemix.contract import MixerInputError
from gazemix.mixers.boxes import box_area_fraction, boxes_to_mask
from gazemix.registry import create_mixer, list_mixers

K = 5
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet10t", pretrained=False, num_classes=K).eval()


MODEL = _cnn()


def sal_ctx(x: torch.Tensor) -> dict[str, Any]:
    g = torch.Generator().manual_seed(1)
    return {"saliency": torch.rand((x.shape[0], 1, *x.shape[-2:]), generator=g, dtype=x.dtype).to(x.device)}


def model_ctx(x: torch.Tensor) -> dict[str, Any]:
    return {"model": MODEL.to(x.device)}


# (registered name, options, context builder)
CASES: list[tuple[str, dict[str, Any], Callable[[torch.Tensor], dict[str, Any]]]] = [
    pytest.param("saliencymix", {}, lambda x: {},
                 marks=pytest.mark.skipif(not hasattr(cv2, "saliency"), reason="needs OpenCV contrib (cv2.saliency)")),
    ("saliencymix", {"saliency_source": "spectral_residual", "per_sample": False}, lambda x: {}),
    ("snapmix", {"mode": "elem"}, model_ctx),
    ("snapmix", {"saliency_source": "context"}, sal_ctx),
    ("attentivemix", {"saliency_source": "context", "top_k": 6}, sal_ctx),
    ("attentivemix", {"top_k": None}, model_ctx),
    ("rmix", {}, model_ctx),
    ("rmix", {"saliency_source": "spectral_residual", "num_patches": 8}, lambda x: {}),
    ("puzzlemix", {"block_choices": (2, 4)}, model_ctx),
    ("puzzlemix", {"saliency_source": "context", "block_choices": (4, 8), "n_labels": 2}, sal_ctx),
    ("comixup", {"niter": 2}, model_ctx),
    ("comixup", {"saliency_source": "context", "grid": None, "m_part": 3, "mixed_blocks": True}, sal_ctx),
    ("saliency_grafting", {}, model_ctx),
    ("saliency_grafting", {"saliency_source": "context", "grid": 4}, sal_ctx),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for n, o, _ in (getattr(c, "values", c) for c in CASES)]


def batch(b: int = 4, h: int = 32, w: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((b, 3, h, w), generator=g), torch.randint(0, K, (b,), generator=g)


def run(name: str, opts: dict, ctx: Callable, x: torch.Tensor, y: torch.Tensor, seed: int = 0):
    mixer = create_mixer(name, num_classes=K, seed=seed, **opts)
    return mixer, mixer(x, y, **ctx(x))


@pytest.mark.parametrize(("name", "opts", "ctx"), CASES, ids=IDS)
@pytest.mark.parametrize("size", [(4, 32, 32), (1, 32, 32), (3, 33, 47)], ids=["b4", "b1", "odd"])
def test_contract(name: str, opts: dict, ctx: Callable, size: tuple[int, int, int]) -> None:
    x, y = batch(*size)
    before_x, before_y = x.clone(), y.clone()
    mixer, r = run(name, opts, ctx, x, y)
    b, _, h, w = x.shape
    torch.testing.assert_close(x, before_x)
    torch.testing.assert_close(y, before_y)
    assert r.images.shape == x.shape and r.targets.shape == (b, K) and r.mixer == name
    assert bool(torch.isfinite(r.images).all()) and bool(torch.isfinite(r.targets).all())
    for s in r.sources:
        assert s.index.shape == (b,) and s.weight.shape == (b,)
        assert float(s.weight.min()) >= -1e-6 and float(s.weight.max()) <= 1 + 1e-6
    shares = sum(s.share.expand(b, 1, h, w).float() for s in r.sources)
    torch.testing.assert_close(shares, torch.ones(b, 1, h, w))  # the shares partition every pixel
    # the pixel rule out = sum_s share_s * warp_s(x[index_s]) holds (constant images c_k = k + 1 reveal shares)
    consts = torch.arange(1.0, b + 1).view(b, 1, 1, 1).expand(b, 3, h, w).contiguous()
    expect = sum(s.share.float() * (consts[s.index] if s.warp is None else s.warp.apply(consts[s.index])) for s in r.sources)
    torch.testing.assert_close(mixer.apply(consts, y, r.params).images, expect.expand(b, 3, h, w))
    # replay of all-ones maps: the own mass is the own share's sum
    own, partner = r.replay(torch.ones(b, 1, h, w))
    torch.testing.assert_close(own, r.mask.flatten(1).sum(1), rtol=1e-5, atol=1e-3)
    assert bool((partner >= -1e-4).all())


@pytest.mark.parametrize(("name", "opts", "ctx"), CASES, ids=IDS)
def test_determinism_under_seed(name: str, opts: dict, ctx: Callable) -> None:
    x, y = batch(seed=3)
    _, r1 = run(name, opts, ctx, x, y, seed=7)
    _, r2 = run(name, opts, ctx, x, y, seed=7)
    torch.testing.assert_close(r1.images, r2.images)
    torch.testing.assert_close(r1.targets, r2.targets)
    mixer = create_mixer(name, num_classes=K, seed=0, **opts)
    r3 = mixer(x, y, generator=torch.Generator().manual_seed(7), **ctx(x))
    torch.testing.assert_close(r3.images, r1.images)


@pytest.mark.parametrize(("name", "opts", "ctx"), CASES, ids=IDS)
def test_missing_context_and_bad_inputs(name: str, opts: dict, ctx: Callable) -> None:
    mixer = create_mixer(name, num_classes=K, **opts)
    x, y = batch()
    if mixer.needs:
        with pytest.raises(MixerInputError, match=f"{mixer.needs[0]}="):
            mixer(x, y)
    with pytest.raises(MixerInputError, match="floating point"):
        mixer((x * 255).to(torch.uint8), y, **ctx(x))
    with pytest.raises(MixerInputError, match="num_classes"):
        create_mixer(name, **opts)(x, y, **ctx(x))


def test_registered_with_references() -> None:
    info = {i.name: i for i in list_mixers()}
    for name in {getattr(c, "values", c)[0] for c in CASES}:
        assert info[name].reference and not info[name].content_independent


@pytest.mark.parametrize(("name", "bad", "match"), [
    ("saliencymix", {"alpha": 0}, "alpha"), ("saliencymix", {"saliency_source": "itti"}, "saliency_source"),
    ("snapmix", {"beta": -1}, "beta"), ("snapmix", {"mode": "pair"}, "mode"),
    ("attentivemix", {"top_k": -1}, "top_k"), ("attentivemix", {"grid": 0}, "grid"),
    ("rmix", {"num_patches": 0}, "num_patches"), ("rmix", {"quantiles": (1.5,)}, "quantiles"),
    ("puzzlemix", {"n_labels": 5}, "n_labels"), ("puzzlemix", {"block_choices": (1,)}, "block_choices"),
    ("puzzlemix", {"t_eps": -1.0}, "t_eps"),
    ("saliency_grafting", {"temperature": 0}, "temperature"), ("saliency_grafting", {"grid": 0}, "grid"),
    ("comixup", {"grid": 0}, "grid"), ("comixup", {"m_part": 0}, "m_part"), ("comixup", {"omega": 2.0}, "omega"),
])
def test_bad_arguments(name: str, bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_mixer(name, num_classes=K, **bad)


# ------------------------------------------------------------------------------------ method checks
def test_saliencymix_box_is_centred_on_the_partner_peak() -> None:
    """R11: one saliency peak at (r, c) → box centred there, CutMix side, lam = 1 - area."""
    b, h, w = 4, 40, 48
    x, y = batch(b, h, w)
    peaks = torch.tensor([[5, 7], [20, 24], [33, 40], [12, 30]])
    sal = torch.zeros(b, 1, h, w)
    sal[torch.arange(b), 0, peaks[:, 0], peaks[:, 1]] = 1.0
    mixer = create_mixer("saliencymix", num_classes=K, seed=4, saliency_source="context")
    r = mixer(x, y, saliency=sal)
    boxes, lam_s, index = r.params["boxes"], r.params["lam_sampled"], r.params["index"]
    ratio = torch.sqrt(1 - lam_s.double())
    hh, hw = (h * ratio).floor().long() // 2, (w * ratio).floor().long() // 2
    pr, pc = peaks[index, 0], peaks[index, 1]
    expect = torch.stack([(pr - hh).clamp(0, h), (pc - hw).clamp(0, w), (pr + hh).clamp(0, h), (pc + hw).clamp(0, w)], 1)
    torch.testing.assert_close(boxes, expect)
    torch.testing.assert_close(r.lam, (1 - box_area_fraction(boxes, (h, w))).float())
    inside = boxes_to_mask(boxes, (h, w))
    torch.testing.assert_close(r.images, torch.where(inside, x[index], x))  # same place in both images


def test_saliencymix_official_mode_uses_one_box_from_first_partner() -> None:
    x, y = batch(6)
    sal = torch.zeros(6, 1, 32, 32)
    sal[:, 0, 10, 20] = 1.0
    sal[:, 0, 3, 3] = torch.arange(6.0) / 10  # weaker second peaks
    r = create_mixer("saliencymix", num_classes=K, seed=0, per_sample=False, saliency_source="context")(x, y, saliency=sal)
    assert bool((r.params["boxes"] == r.params["boxes"][0]).all())
    assert len(set(r.lam.tolist())) == 1


def test_snapmix_uniform_cam_gives_area_labels() -> None:
    """R13: a constant map → lam_own = 1 - area(box), lam_partner = area(box1); same class → both their sum."""
    x, _ = batch(6, 40, 40)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    mixer = create_mixer("snapmix", num_classes=K, seed=2, saliency_source="context")
    r = mixer(x, y, saliency=torch.full((6, 1, 40, 40), 0.3))
    box, box1 = r.params["box"], r.params["box1"]
    a, a1 = box_area_fraction(box, (40, 40)).float(), box_area_fraction(box1, (40, 40)).float()
    torch.testing.assert_close(r.lam, 1 - a)
    torch.testing.assert_close(r.partner_lam, a1)
    own, partner = r.replay(torch.ones(6, 1, 40, 40))  # the partner keeps exactly the mass of box1
    torch.testing.assert_close(partner, a1 * 1600)
    official = create_mixer("snapmix", num_classes=K, seed=2, saliency_source="context", official_same_label=True)
    ro = official(x, y, saliency=torch.full((6, 1, 40, 40), 0.3))
    same = y == y[ro.index]
    torch.testing.assert_close(ro.lam[same], (1 - a + a1)[same])
    torch.testing.assert_close(ro.partner_lam[same], (1 - a + a1)[same])
    torch.testing.assert_close(ro.lam[~same], (1 - a)[~same])


def test_snapmix_cam_mass_labels() -> None:
    """A CAM concentrated in one pixel: the label weight is 1 exactly when the box holds that pixel."""
    x, y = batch(4, 32, 32)
    sal = torch.zeros(4, 1, 32, 32)
    sal[:, 0, 16, 16] = 1.0
    r = create_mixer("snapmix", num_classes=K, seed=5, saliency_source="context")(x, y, saliency=sal)
    in_box = boxes_to_mask(r.params["box"], (32, 32))[:, 0, 16, 16].float()
    in_box1 = boxes_to_mask(r.params["box1"], (32, 32))[:, 0, 16, 16].float()
    torch.testing.assert_close(r.lam, 1 - in_box)
    torch.testing.assert_close(r.partner_lam, in_box1)


def test_attentivemix_six_of_seven_by_seven() -> None:
    """R12: 7x7 grid, k = 6 → partner weight 6/49, the six highest cells of the partner."""
    x, y = batch(3, 28, 28)
    g = torch.Generator().manual_seed(0)
    cells = torch.rand((3, 7, 7), generator=g)
    sal = cells.repeat_interleave(4, 1).repeat_interleave(4, 2).unsqueeze(1)
    r = create_mixer("attentivemix", num_classes=K, seed=1, saliency_source="context")(x, y, saliency=sal)
    torch.testing.assert_close(r.partner_lam, torch.full((3,), 6 / 49))
    pasted_cells = (1 - r.mask)[:, 0, ::4, ::4] > 0.5
    top6 = cells[r.index].flatten(1).topk(6, dim=1).indices
    expect = torch.zeros(3, 49, dtype=torch.bool).scatter_(1, top6, True).view(3, 7, 7)
    assert torch.equal(pasted_cells, expect)


def test_attentivemix_with_a_cnn_teacher_at_224() -> None:
    x, y = batch(2, 224, 224)
    r = create_mixer("attentivemix", num_classes=K, seed=0)(x, y, model=MODEL)
    assert r.params["grid"] == (7, 7)
    torch.testing.assert_close(r.partner_lam, torch.full((2,), 6 / 49))
    with pytest.raises(MixerInputError, match="top_k=6"):
        create_mixer("attentivemix", num_classes=K)(*batch(2, 64, 64), model=MODEL)


def test_rmix_label_sums_to_one_and_q0_is_mixup() -> None:
    """R16."""
    x, y = batch(5, 32, 32)
    r = create_mixer("rmix", num_classes=K, seed=0, saliency_source="context")(x, y, **sal_ctx(x))
    torch.testing.assert_close(r.targets.sum(1), torch.ones(5))
    top = F.interpolate(r.params["top"].float(), size=(32, 32), mode="nearest")
    agree = (top == top[r.index]).float().flatten(1).mean(1)
    own_only = (top * (1 - top[r.index])).flatten(1).mean(1)
    torch.testing.assert_close(r.lam, agree * r.params["lam"] + own_only)
    mix0 = create_mixer("rmix", num_classes=K, seed=0, quantiles=(0.0,), saliency_source="context", alpha=1.0)
    r0 = mix0(x, y, **sal_ctx(x))
    lam = r0.params["lam"].view(-1, 1, 1, 1)
    torch.testing.assert_close(r0.images, lam * x + (1 - lam) * x[r0.index])
    torch.testing.assert_close(r0.lam, r0.params["lam"])


def test_rmix_disagreeing_cells_copy_the_salient_side() -> None:
    x, y = batch(2, 32, 32)
    sal = torch.zeros(2, 1, 32, 32)
    sal[0, :, :16] = 1.0  # image 0: top half salient
    sal[1, :, :, :16] = 1.0  # image 1: left half salient
    mixer = create_mixer("rmix", num_classes=K, quantiles=(0.5,), num_patches=2, saliency_source="context",
                         pairing="flip")
    r = mixer(x, y, saliency=sal)
    # output 0 (own 0, partner 1): top-right is own-only, bottom-left partner-only
    torch.testing.assert_close(r.images[0, :, :16, 16:], x[0, :, :16, 16:])
    torch.testing.assert_close(r.images[0, :, 16:, :16], x[1, :, 16:, :16])
    torch.testing.assert_close(r.lam, torch.full((2,), 0.5 * float(r.params["lam"][0]) + 0.25))


def split_saliency(b: int, h: int = 32, w: int = 32) -> torch.Tensor:
    """Even images salient on the left third, odd images on the right third."""
    sal = torch.full((b, 1, h, w), 0.01)
    sal[0::2, :, :, : w // 3] = 1.0
    sal[1::2, :, :, w - w // 3:] = 1.0
    return sal


def test_puzzlemix_mask_levels_and_partial_permutation_plans() -> None:
    """R14: mask values in {0, 1/2, 1}, lam = mean(mask), transport plans are partial permutations."""
    x, y = batch(4)
    for seed in range(4):
        mixer = create_mixer("puzzlemix", num_classes=K, seed=seed, saliency_source="context", pairing="flip")
        r = mixer(x, y, saliency=split_saliency(4))
        assert set(r.params["block_mask"].unique().tolist()) <= {0.0, 0.5, 1.0}
        assert set(r.mask.unique().tolist()) <= {0.0, 0.5, 1.0}
        torch.testing.assert_close(r.lam, r.params["block_mask"].flatten(1).mean(1))
        for src in r.sources:
            plan = src.warp.plan
            assert set(plan.unique().tolist()) <= {0.0, 1.0}
            assert float(plan.sum(1).max()) <= 1 and float(plan.sum(2).max()) <= 1
        # the salient side of each image is kept: own's salient third is own, partner's is partner
        assert float(r.mask[0, 0, :, :8].mean()) == 1.0 and float(r.mask[0, 0, :, -8:].mean()) == 0.0


def test_puzzlemix_transport_moves_salient_blocks_into_the_own_region() -> None:
    """With the own region on the left, a salient own block on the right is moved into it."""
    from gazemix.mixers.puzzlemix import transport_sources
    mask = torch.zeros(1, 4, 4)
    mask[:, :, :2] = 1.0
    unary = torch.full((1, 4, 4), 0.001)
    unary[0, 1, 3] = 1.0  # a salient block at row 1, column 3 (outside the own region)
    src = transport_sources(mask, unary, eps=0.8)[0].view(4, 4)
    assert 7 in src[:, :2].flatten().tolist()  # block 7 = (1, 3) now shown in the own region
    assert set(src[src >= 0].tolist()) == set(src[src >= 0].unique().tolist())  # no block shown twice
    plain = create_mixer("puzzlemix", num_classes=K, seed=0, transport=False, saliency_source="context")
    r = plain(*batch(2), saliency=split_saliency(2))
    torch.testing.assert_close(r.images, r.mask * batch(2)[0] + (1 - r.mask) * batch(2)[0][r.index])


def test_puzzlemix_graph_cut_fits_int32_on_a_16x16_grid() -> None:
    """Concentrated saliency on 16 x 16 blocks: the official float path overflows int32 there; no warning here."""
    import warnings

    x, y = batch(4, h=32, w=32)
    sal = torch.full((4, 1, 32, 32), 1e-4)
    sal[:, :, 4:6, 4:6] = 1.0  # one block holds nearly all the saliency: unary about 1 (x 256000 x 1e5 > 2^31)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = create_mixer("puzzlemix", num_classes=K, seed=0, block_choices=(16,), saliency_source="context")(
            x, y, saliency=sal)
    assert r.params["grid"] == 16 and set(r.params["block_mask"].unique().tolist()) <= {0.0, 0.5, 1.0}
    torch.testing.assert_close(r.lam, r.params["block_mask"].flatten(1).mean(1))


@pytest.mark.parametrize("n_labels", [2, 3, 4])
def test_puzzlemix_graph_cut_equals_the_official_inputs_where_they_fit(n_labels: int) -> None:
    """Where the official energies fit int32, the int32 energies (official / 1000) give the same cut."""
    import numpy as np
    gco = pytest.importorskip("gco")
    from gazemix.mixers.puzzlemix import graphcut_mask

    rng = np.random.default_rng(n_labels)
    n, lam, beta, eta = 8, 0.4, 1.2 / 8 / 16, 0.2
    u_own, u_partner = rng.dirichlet(np.ones(n * n), 2).reshape(2, n, n)
    pw_x, pw_y = 0.01 * rng.random((n - 1, n)), 0.01 * rng.random((n, n - 1))
    got = graphcut_mask(u_partner, u_own, pw_x, pw_y, lam, beta, eta, n_labels)
    # the official inputs: int32 (x 1000 n^2) unaries and edge weights, float32 label costs (gco's float mode)
    large = 1000 * n ** 2
    k = np.arange(n_labels)
    prior = np.array([-np.log(math.comb(n_labels - 1, int(i)) * lam ** (n_labels - 1 - i) * (1 - lam) ** i + 1e-8)
                      for i in k]) * eta / n ** 2
    unary = np.stack([(1 - s) * u_partner + s * u_own + prior[i] for i, s in enumerate(np.linspace(0, 1, n_labels))],
                     axis=-1)
    labels = gco.cut_grid_graph((large * unary).astype(np.int32),
                                ((k[:, None] - k[None, :]) ** 2 / (n_labels - 1) ** 2).astype(np.float32),
                                (large * (pw_x + beta)).astype(np.int32), (large * (pw_y + beta)).astype(np.int32),
                                algorithm="swap")
    np.testing.assert_array_equal(got, 1.0 - np.asarray(labels).reshape(n, n) / (n_labels - 1))


def test_block_transport_warp_keeps_mass_and_moves_gaze() -> None:
    from gazemix.warps import BlockTransportWarp
    g = torch.zeros(1, 1, 9, 9)
    g[0, 0, 0, 0] = 1.0  # mass in block 0 of a 2x2 grid of 4x4 blocks (remainder row/column 8)
    g[0, 0, 8, 8] = 2.0  # in the remainder: stays
    warp = BlockTransportWarp(src=torch.tensor([[-1, 0, 2, 3]]), dst=torch.tensor([[0, 0, 8, 8]]))
    moved = warp.apply_density(g)
    assert float(moved[0, 0, 0, 4]) == 1.0 and float(moved[0, 0, 0, 0]) == 0.0 and float(moved[0, 0, 8, 8]) == 2.0
    torch.testing.assert_close(moved.sum(), g.sum())
    torch.testing.assert_close(warp.plan[0], torch.tensor([[0., 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    assert warp.index_select(torch.tensor([0, 0])).src.shape == (2, 4)


def block_saliency(b: int, n: int = 4, size: int = 32) -> torch.Tensor:
    """Image i salient in block i (row-major) of an n x n grid, faint elsewhere."""
    sal = torch.full((b, 1, size, size), 0.01)
    k = size // n
    for i in range(b):
        r, c = divmod(i % (n * n), n)
        sal[i, :, r * k:(r + 1) * k, c * k:(c + 1) * k] = 1.0
    return sal


def test_comixup_one_source_per_pixel_and_block_share_labels() -> None:
    """R15: every pixel from exactly one input; label = block shares of the inputs, summing to 1."""
    b = 7
    x, _ = batch(b)
    y = torch.arange(b) % K
    r = create_mixer("comixup", num_classes=K, seed=0, saliency_source="context", m_part=4)(x, y, saliency=block_saliency(b))
    assert r.num_sources == 4
    shares = torch.cat([s.share.float() for s in r.sources], dim=1)
    assert set(shares.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(shares.sum(1), torch.ones(b, 32, 32))
    weights = torch.stack([s.weight for s in r.sources], dim=1)
    torch.testing.assert_close(weights.sum(1), torch.ones(b))
    labels = r.params["block_shares"].argmax(-1)
    for o in range(b):
        start = o // 4 * 4
        for s, src in enumerate(r.sources):
            if src.weight[o] > 0:
                local = int(src.index[o]) - start
                assert 0 <= local < 4  # only inputs of the output's own group
                assert float(src.weight[o]) == pytest.approx(float((labels[o] == local).float().mean()))
    onehot = F.one_hot(y, K).float()
    hand = torch.stack([sum(s.weight[o] * onehot[s.index[o]] for s in r.sources) for o in range(b)])
    torch.testing.assert_close(r.targets, hand)


def test_comixup_without_smoothness_or_diversity_takes_the_most_salient_input_per_block() -> None:
    """beta = gamma = eta = 0: the graph cut reduces to a per-block argmax of normalised saliency."""
    b = 5
    x, y = batch(b)
    sal = block_saliency(b)
    r = create_mixer("comixup", num_classes=K, seed=0, saliency_source="context", beta=0.0, gamma=0.0, eta=0.0)(
        x, y, saliency=sal)
    blocks = F.adaptive_avg_pool2d(sal, 4)[:, 0]
    best = (blocks / blocks.flatten(1).sum(1).view(-1, 1, 1)).argmax(0)
    for o in range(b):
        assert torch.equal(r.params["block_shares"][o].argmax(-1), best)
    torch.testing.assert_close(r.images[0, :, :8, :8], x[0, :, :8, :8])  # block (0, 0) is input 0's salient block
    torch.testing.assert_close(r.images[3, :, :8, 8:16], x[1, :, :8, 8:16])
    heavy = create_mixer("comixup", num_classes=K, seed=0, saliency_source="context", beta=100.0)(x, y, saliency=sal)
    assert all(len(heavy.params["block_shares"][o].argmax(-1).unique()) == 1 for o in range(b))  # one input each


def test_comixup_official_mixed_blocks_are_half_half() -> None:
    b = 6
    x, y = batch(b)
    mixer = create_mixer("comixup", num_classes=K, seed=0, saliency_source="context", mixed_blocks=True,
                         gamma=0.0, eta=0.0)
    r = mixer(x, y, saliency=block_saliency(b))
    shares = r.params["block_shares"]
    assert set(shares.unique().tolist()) <= {0.0, 0.5, 1.0}
    torch.testing.assert_close(shares.sum(-1), torch.ones(b, 4, 4))
    assert bool((shares == 0.5).any()) and int((shares > 0).sum(-1).max()) == 2  # 50/50 blocks of two inputs
    torch.testing.assert_close(r.targets.sum(1), torch.ones(b))
    for src in r.sources:  # each source's label weight is its input's share of the blocks
        torch.testing.assert_close(src.weight, shares.flatten(1, 2).mean(1)[torch.arange(b), src.index])


def test_comixup_official_parse_of_the_diversity_threshold() -> None:
    """``(A @ p > thres).float() * A @ p`` is ``((mask * A) @ p)`` in Python, not ``mask * (A @ p)``."""
    from gazemix.mixers.comixup import modular_penalty

    a = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 1.0]], dtype=torch.float64)
    p = torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64)
    mask = (a @ p > 2.0).double()  # A p = (3.5, 2.5, 0.2): inputs 0 and 1 pass
    official = (a @ p > 2.0).double() * a @ p  # the official expression, evaluated as Python parses it
    torch.testing.assert_close(modular_penalty(a, p, 2.0, official_parse=True), official)
    torch.testing.assert_close(official, (mask * a) @ p)
    torch.testing.assert_close(modular_penalty(a, p, 2.0), mask * (a @ p))
    assert not torch.allclose(modular_penalty(a, p, 2.0), official)  # (3.5, 2.5, 0) vs (3.5, 2.5, 0.2)
    b = 6
    x, y = batch(b)
    r = create_mixer("comixup", num_classes=K, seed=0, saliency_source="context", official_parse=True)(
        x, y, saliency=block_saliency(b))
    torch.testing.assert_close(r.params["block_shares"].sum(-1), torch.ones(b, 4, 4))


def test_saliency_grafting_grafts_only_salient_patches_with_calibrated_labels() -> None:
    b = 6
    x, y = batch(b)
    sal = block_saliency(b)  # one salient 8x8 block per image on a 4x4 grid
    mixer = create_mixer("saliency_grafting", num_classes=K, seed=0, grid=4, saliency_source="context")
    r = mixer(x, y, saliency=sal)
    graft = r.params["graft"]
    blocks = F.adaptive_avg_pool2d(sal, 4)[:, 0]
    salient = blocks == blocks.flatten(1).max(1).values.view(-1, 1, 1)
    assert bool((graft <= salient[r.index]).all())  # only the partner's candidate (salient) patch can move
    norm = blocks / blocks.flatten(1).sum(1).view(-1, 1, 1)
    own = (norm * ~graft).flatten(1).sum(1)
    partner = (norm[r.index] * graft).flatten(1).sum(1)
    torch.testing.assert_close(r.lam, own / (own + partner))
    torch.testing.assert_close(r.targets.sum(1), torch.ones(b))
    # over many draws the grafting is stochastic: some samples graft, some do not
    draws = torch.stack([mixer(x, y, saliency=sal).params["graft"].flatten(1).any(1) for _ in range(8)])
    assert 0 < float(draws.float().mean()) < 1


@CUDA
@pytest.mark.parametrize(("name", "opts", "ctx"), CASES, ids=IDS)
def test_cuda_matches_device(name: str, opts: dict, ctx: Callable) -> None:
    x, y = batch()
    try:
        _, r = run(name, opts, ctx, x.cuda(), y.cuda())
        assert r.images.device.type == "cuda" and r.targets.device.type == "cuda"
        torch.testing.assert_close(r.targets.sum(1).cpu(), (r.lam + r.partner_lam).cpu(), rtol=1e-4, atol=1e-5)
    finally:
        MODEL.cpu()


def test_snapmix_box_mass_is_the_spm_mass_without_building_the_spm() -> None:
    from gazemix.attention.cam import normalise_cam
    from gazemix.mixers.boxes import box_area_fraction, boxes_to_mask
    from gazemix.mixers.snapmix import box_mass

    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[0, 10, 13, 32], [0, 0, 9, 14], [2, 3, 2, 20], [3, 3, 20, 20]])
    near_constant = -0.03 + 1e-6 * torch.rand(4, 1, 32, 32, generator=g)  # an untrained CAM: all signal in float noise
    for maps in (torch.rand(4, 1, 32, 32, generator=g), near_constant):
        spm = normalise_cam(maps.double())
        torch.testing.assert_close(box_mass(maps, boxes), (spm * boxes_to_mask(boxes, (32, 32))).sum(dim=(1, 2, 3)))
    constant = torch.full((4, 1, 32, 32), 0.3).index_fill_(0, torch.tensor([1]), float("nan"))
    torch.testing.assert_close(box_mass(constant, boxes), box_area_fraction(boxes, (32, 32)))  # SnapMix's uniform SPM
