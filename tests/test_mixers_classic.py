"""Properties of the classic mixers (issue 3): contract, exact label rules, determinism, errors."""

from __future__ import annotations

import math

import pytest
import torch

from gazemix import create_mixer
from gazemix.contract import MixerInputError
from gazemix.mixers.boxes import cutmix_boxes
from tests.conftest import needs_cuda

PAIR_MIXERS = ["mixup", "cutmix", "switch", "fmix", "resizemix", "gridmix", "bc", "lumix"]
ALL_CLASSIC = PAIR_MIXERS + ["bc_plus", "splicemix"]
ELEM_MODES = {"mixup": {"mode": "elem"}, "cutmix": {"mode": "elem"}, "switch": {"mode": "elem"}, "fmix": {"mode": "elem"}}


def constant_batch(b: int, h: int = 20, w: int = 24) -> torch.Tensor:
    """Image i is constant i + 1, so any output pixel reveals the shares of its sources."""
    return (torch.arange(b, dtype=torch.float32) + 1).view(b, 1, 1, 1).expand(b, 3, h, w).clone()


@pytest.mark.parametrize("name", ALL_CLASSIC)
@pytest.mark.parametrize("hw", [(32, 32), (33, 37)])
def test_shapes_targets_and_lam(name, hw):
    b, k = 6, 6
    x, y = torch.rand(b, 3, *hw), torch.arange(b)
    r = create_mixer(name, num_classes=k, seed=1)(x, y)
    n = r.images.shape[0]
    assert r.images.shape[1:] == x.shape[1:] and r.images.dtype == x.dtype
    assert r.targets.shape == (n, k) and r.lam.shape == (n,) and r.index.shape == (n,)
    assert r.mask.shape == (n, 1, *hw)
    assert bool(((r.lam >= 0) & (r.lam <= 1)).all())
    if name == "splicemix":
        assert n == b + b // 4
        assert bool(((r.targets == 0) | (r.targets == 1)).all())  # multi-hot
    else:
        assert n == b
        torch.testing.assert_close(r.targets.sum(1), torch.ones(n))
        torch.testing.assert_close(r.lam + r.partner_lam, torch.ones(n))


@pytest.mark.parametrize("name", PAIR_MIXERS + ["splicemix"])
@pytest.mark.parametrize("options", [{}, "elem"])
def test_constant_images_reveal_the_mask(name, options):
    if options == "elem":
        if name not in ELEM_MODES:
            pytest.skip("no elem mode")
        options = ELEM_MODES[name]
    b = 7
    x = constant_batch(b)
    r = create_mixer(name, num_classes=b, seed=3, **options)(x, torch.arange(b))
    maps = r.source_maps(torch.ones(b, 1, *x.shape[-2:]))  # share * warp(ones)
    value = (torch.arange(b, dtype=torch.float32) + 1)
    # Each output pixel is sum_s share_s * warp_s(value of source s); warp(ones) is 1 where the warp shows content.
    shown = torch.stack([(s.warp.apply(torch.ones(s.index.shape[0], 1, *x.shape[-2:])) if s.warp else
                          torch.ones(s.index.shape[0], 1, *x.shape[-2:]))[:, 0] for s in r.sources], 1)
    expected = sum(r.sources[k].share.expand(r.images.shape[0], 1, *x.shape[-2:])[:, 0] * shown[:, k]
                   * value[r.sources[k].index].view(-1, 1, 1) for k in range(r.num_sources))
    torch.testing.assert_close(r.images[:, 0], expected, rtol=1e-5, atol=1e-5)
    assert maps.shape == (r.images.shape[0], r.num_sources, *x.shape[-2:])


@pytest.mark.parametrize("name", ["mixup", "cutmix", "switch", "fmix", "gridmix", "bc"])
def test_zero_own_one_partner_gives_one_minus_mask(name):
    # Two images, paired with each other: own 0, partner 1 reveals 1 - M for sample 0.
    x = torch.stack([torch.zeros(3, 16, 16), torch.ones(3, 16, 16)])
    mixer = create_mixer(name, num_classes=2, seed=0, **({"pairing": "flip"} if name not in ("bc",) else {}))
    r = mixer(x, torch.tensor([0, 1]))
    assert int(r.index[0]) == 1
    torch.testing.assert_close(r.images[0, :1], 1 - r.mask[0])


@pytest.mark.parametrize("name", PAIR_MIXERS)
def test_replay_of_ones_matches_the_mask(name):
    b, hw = 5, (24, 28)
    r = create_mixer(name, num_classes=b, seed=2)(torch.rand(b, 3, *hw), torch.arange(b))
    own, partner = r.replay(torch.ones(b, 1, *hw))
    torch.testing.assert_close(own, r.mask.sum(dim=(1, 2, 3)))
    if r.sources[1].warp is None:
        torch.testing.assert_close(partner, (1 - r.mask).sum(dim=(1, 2, 3)))
    else:  # the whole shrunk partner is shown: it keeps all its mass
        src = r.sources[1].warp.src
        torch.testing.assert_close(partner, ((src[:, 2] - src[:, 0]) * (src[:, 3] - src[:, 1])).float())


@pytest.mark.parametrize("name", ALL_CLASSIC)
def test_seeded_mix_is_reproducible_and_inputs_untouched(name):
    x, y = torch.rand(6, 3, 20, 20), torch.arange(6)
    x0, y0 = x.clone(), y.clone()
    a = create_mixer(name, num_classes=6, seed=11)(x, y)
    b = create_mixer(name, num_classes=6, seed=11)(x, y)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    c, d = create_mixer(name, num_classes=6)(x, y, generator=g1), create_mixer(name, num_classes=6)(x, y, generator=g2)
    for p, q in ((a, b), (c, d)):
        torch.testing.assert_close(p.images, q.images)
        torch.testing.assert_close(p.targets, q.targets)
        assert torch.equal(p.index, q.index)
    assert torch.equal(x, x0) and torch.equal(y, y0)


@pytest.mark.parametrize("name", ALL_CLASSIC)
def test_batch_of_one(name):
    r = create_mixer(name, num_classes=3, seed=0)(torch.rand(1, 3, 16, 16), torch.tensor([2]))
    assert r.images.shape[0] == 1 and r.targets.shape == (1, 3)
    torch.testing.assert_close(r.targets.sum(), torch.tensor(1.0))


@pytest.mark.parametrize("name", ALL_CLASSIC)
def test_soft_targets_accepted(name):
    y = torch.softmax(torch.randn(4, 5), 1) if name != "splicemix" else (torch.rand(4, 5) > 0.5).float()
    r = create_mixer(name, seed=0)(torch.rand(4, 3, 16, 16), y)
    assert r.targets.shape[1] == 5


def test_bad_inputs_raise_clear_errors():
    m = create_mixer("cutmix", num_classes=3)
    with pytest.raises(MixerInputError, match="num_classes"):
        create_mixer("cutmix")(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(MixerInputError, match=r"\[0, 2\]"):
        m(torch.rand(2, 3, 8, 8), torch.tensor([0, 3]))
    with pytest.raises(MixerInputError, match="one row per image"):
        m(torch.rand(2, 3, 8, 8), torch.tensor([0, 1, 2]))
    with pytest.raises(MixerInputError, match=r"\(B, C, H, W\)"):
        m(torch.rand(3, 8, 8), torch.tensor([0, 1, 2]))
    with pytest.raises(MixerInputError, match="floating point"):
        m(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="alpha"):
        create_mixer("mixup", alpha=-1)
    with pytest.raises(ValueError, match="mode"):
        create_mixer("cutmix", mode="pair")
    with pytest.raises(ValueError, match="pairing"):
        create_mixer("fmix", pairing="shuffle")
    with pytest.raises(ValueError, match="unknown mixer 'cutmx'.*'cutmix'"):
        create_mixer("cutmx")
    with pytest.raises(ValueError, match="label_smoothing"):
        create_mixer("mixup", label_smoothing=1.5)
    with pytest.raises(ValueError, match="grid_probs"):
        create_mixer("splicemix", grid_probs=(0.5, 0.5, 0.5))
    with pytest.raises(MixerInputError, match="resize the maps"):
        m(torch.rand(2, 3, 8, 8), torch.tensor([0, 1])).replay(torch.ones(2, 1, 4, 4))


# ------------------------------------------------------------------ exact label rules (spec mixers.md §5.1)
def test_cutmix_lam_is_exactly_one_minus_pasted_area():
    for mode in ("batch", "elem"):
        r = create_mixer("cutmix", num_classes=8, mode=mode, seed=4)(torch.rand(8, 3, 32, 40), torch.arange(8))
        torch.testing.assert_close(r.lam, r.mask.mean(dim=(1, 2, 3)))


@pytest.mark.parametrize("hw,lam,centre,expected", [
    ((224, 224), 0.5, (112, 112), 1 - 158 ** 2 / 224 ** 2),   # R2
    ((32, 32), 0.25, (16, 16), 1 - 676 / 1024),               # R3
    ((32, 32), 0.25, (0, 0), 1 - 169 / 1024),                 # R4
    ((32, 32), 0.0, (16, 16), 0.0),                           # R5
])
def test_cutmix_reference_boxes(hw, lam, centre, expected, monkeypatch):
    values = iter([torch.tensor([centre[0]]), torch.tensor([centre[1]])])
    monkeypatch.setattr(torch, "randint", lambda *a, **k: next(values))
    box = cutmix_boxes(hw, torch.tensor([lam]), torch.Generator())
    area = float((box[0, 2] - box[0, 0]) * (box[0, 3] - box[0, 1]))
    assert math.isclose(1 - area / (hw[0] * hw[1]), expected, abs_tol=1e-6)


def test_cutmix_box_side_matches_torchvision_half_width():  # R6
    for w in range(8, 300, 7):
        for lam in torch.linspace(0, 1, 23).tolist():
            r = math.sqrt(1 - lam)
            assert int(w * r) // 2 == int(0.5 * r * w)


@pytest.mark.parametrize("edges, side", [("cutmix", 14), ("timm", 15)])
def test_cutmix_box_edges_original_or_timm_1(edges, side, monkeypatch):
    """An odd side of 15: ``[c - 7, c + 7)`` (original CutMix, timm < 1.0, torchvision) or ``[c - 7, c + 8)``."""
    import numpy as np
    from timm.data.mixup import rand_bbox

    lam = 1 - (15.5 / 100) ** 2  # int(100 * sqrt(1 - lam)) = 15
    values = iter([torch.tensor([50]), torch.tensor([40])])
    monkeypatch.setattr(torch, "randint", lambda *a, **k: next(values))
    box = cutmix_boxes((100, 100), torch.tensor([lam]), torch.Generator(), edges).tolist()[0]
    assert box == [50 - 7, 40 - 7, 50 - 7 + side, 40 - 7 + side]
    if edges == "timm":  # the installed timm's rand_bbox, centre fixed the same way
        centre = iter([50, 40])
        monkeypatch.setattr(np.random, "randint", lambda *a, **k: next(centre))
        yl, yh, xl, xh = rand_bbox((100, 100), lam)
        assert [yl, xl, yh, xh] == box
    m = create_mixer("cutmix", num_classes=2, box_edges=edges, seed=0)
    assert m.box_edges == edges and create_mixer("switch", num_classes=2, box_edges=edges).box_edges == edges
    with pytest.raises(ValueError, match="box_edges"):
        create_mixer("cutmix", box_edges="round")


def test_cutmix_box_centres_reach_every_pixel():
    g = torch.Generator().manual_seed(0)
    boxes = cutmix_boxes((6, 6), torch.full((4000,), 0.9), g)
    centres = set(zip(((boxes[:, 0] + boxes[:, 2]) // 2).tolist(), ((boxes[:, 1] + boxes[:, 3]) // 2).tolist()))
    assert len(centres) >= 30  # clipping merges some border centres; the interior is covered


def test_beta_lambda_distribution():
    r = create_mixer("mixup", num_classes=2, alpha=1.0, mode="elem", seed=0)(torch.rand(20000, 1, 1, 1), torch.zeros(20000, dtype=torch.long))
    assert abs(float(r.lam.mean()) - 0.5) < 0.01
    assert abs(float(r.lam.var()) - 1 / 12) < 0.005  # Beta(1,1) variance 1/(4(2a+1))


def test_mixup_targets_and_pixels():  # R7
    x = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)])
    r = create_mixer("mixup", num_classes=2, pairing="flip", seed=0)(x, torch.tensor([0, 1]))
    lam = float(r.lam[0])
    torch.testing.assert_close(r.images[0], torch.full((3, 4, 4), 1 - lam))
    torch.testing.assert_close(r.targets[0], torch.tensor([lam, 1 - lam]))


def test_label_smoothing_matches_timm():  # R8
    r = create_mixer("mixup", num_classes=10, label_smoothing=0.1, pairing="flip", seed=0)(torch.rand(1, 3, 4, 4), torch.tensor([3]))
    torch.testing.assert_close(r.targets[0, 3], torch.tensor(0.91))
    torch.testing.assert_close(r.targets[0, 0], torch.tensor(0.01))


def test_fmix_mask_counts_and_top_values():  # R9
    m = create_mixer("fmix", num_classes=4, seed=0)
    for _ in range(5):
        r = m(torch.rand(4, 3, 32, 32), torch.arange(4))
        ones = int(r.mask[0].sum())
        lam = float(r.lam[0])
        assert ones in (math.floor(lam * 1024), math.ceil(lam * 1024))
        assert abs(float(r.lam[0]) - float(r.mask[0].mean())) <= 1 / 1024 + 1e-6


def test_fmix_mask_is_top_k_of_a_low_frequency_image():
    from gazemix.mixers.fmix import binarise_top_k, low_frequency_images
    grey = low_frequency_images(1, (32, 32), 3.0, torch.Generator().manual_seed(0))
    mask = binarise_top_k(grey, torch.tensor([0.3]), torch.tensor([True]))
    assert int(mask.sum()) == 308
    assert float(grey[mask].min()) >= float(grey[~mask].max())


@pytest.mark.parametrize("tau,side,partner", [(0.5, 112, 0.25), (0.1, 22, 0.009646), (0.8, 179, 0.638572)])
def test_resizemix_reference_areas(tau, side, partner):  # R10
    m = create_mixer("resizemix", num_classes=2, scale_range=(tau, tau), seed=0)
    r = m(torch.rand(2, 3, 224, 224), torch.arange(2))
    box = r.params["boxes"][0]
    assert int(box[2] - box[0]) == side and int(box[3] - box[1]) == side
    assert abs(float(1 - r.lam[0]) - partner) < 1e-5
    own, kept = r.replay(torch.ones(2, 1, 224, 224))
    torch.testing.assert_close(kept, torch.full((2,), 224.0 * 224.0))  # the whole shrunk partner is visible


def test_resizemix_replay_moves_partner_gaze_into_the_box():
    m = create_mixer("resizemix", num_classes=2, scale_range=(0.5, 0.5), seed=0)
    x = torch.rand(2, 3, 64, 64)
    r = m(x, torch.arange(2))
    gaze = torch.zeros(2, 1, 64, 64)
    gaze[:, :, :32, :32] = 1 / (32 * 32)  # all partner gaze in its top-left quarter
    maps = r.source_maps(gaze)
    y1, x1, y2, x2 = (int(v) for v in r.params["boxes"][0])
    partner_map = maps[0, 1]
    torch.testing.assert_close(partner_map.sum(), torch.tensor(1.0))
    assert float(partner_map[y1:y1 + 16, x1:x1 + 16].sum()) > 0.95  # the quarter shrinks to the box's quarter


def test_bc_pairs_different_classes():
    y = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])
    r = create_mixer("bc", num_classes=4, seed=0)(torch.rand(8, 3, 8, 8), y)
    assert bool((y[r.index] != y).all())
    r1 = create_mixer("bc", num_classes=4, seed=0)(torch.rand(3, 3, 8, 8), torch.tensor([1, 1, 1]))
    assert r1.params["unpaired"] == 3 and bool((r1.lam == 1).all())


def test_bc_plus_waveform_coefficient():  # R22
    x1 = torch.randn(1, 3, 16, 16)
    x1 = (x1 - x1.mean()) / x1.std(unbiased=False) * 2.0
    x2 = torch.randn(1, 3, 16, 16)
    x2 = (x2 - x2.mean()) / x2.std(unbiased=False)
    m = create_mixer("bc_plus", num_classes=2, seed=0)
    params = {"r": torch.tensor([0.5, 0.5]), "index": torch.tensor([1, 0]), "unpaired": 0}
    r = m.apply(torch.cat([x1, x2]), torch.tensor([0, 1]), params)
    p = float(r.params["p"][0])
    assert abs(p - 1 / 3) < 1e-5
    expected = (p * x1 + (1 - p) * x2) / math.sqrt(p ** 2 + (1 - p) ** 2)
    torch.testing.assert_close(r.images[:1], expected, rtol=1e-4, atol=1e-5)
    assert abs(1 / math.sqrt(p ** 2 + (1 - p) ** 2) - 1.341641) < 1e-5
    torch.testing.assert_close(r.targets[0], torch.tensor([0.5, 0.5]))
    assert r.per_pixel_offset


def test_splicemix_appends_and_unions_labels():  # R23
    b = 64
    y = torch.arange(b) % 10
    x = torch.rand(b, 3, 32, 32)
    r = create_mixer("splicemix", num_classes=10, seed=0)(x, y)
    torch.testing.assert_close(r.images[:b], x)
    assert r.images.shape[0] == 80
    tiles, dropped = r.params["tiles"], r.params["dropped"]
    for k in range(16):
        expected = torch.zeros(10)
        expected[y[tiles[k][~dropped[k]]]] = 1
        torch.testing.assert_close(r.targets[b + k], expected)
    rows, cols = r.params["grid"]
    ch, cw = 32 // rows, 32 // cols  # first cell: edges at floor(k * H / rows)
    import torch.nn.functional as F
    x = r.images[:b]
    for k in range(16):
        expected = F.interpolate(x[tiles[k, 0]].unsqueeze(0), size=(ch, cw), mode="bilinear", align_corners=True)[0]
        if bool(dropped[k, 0]):
            expected = torch.zeros_like(expected)
        torch.testing.assert_close(r.images[b + k, :, :ch, :cw], expected, rtol=1e-4, atol=1e-5)


def test_gridmix_cells_and_label():
    r = create_mixer("gridmix", num_classes=4, grid=4, seed=0)(torch.rand(4, 3, 32, 32), torch.arange(4))
    cells = r.params["cell_from_own"].float()
    torch.testing.assert_close(r.lam, cells.mean(dim=(1, 2)))
    blocks = r.mask[:, 0].unfold(1, 8, 8).unfold(2, 8, 8)  # (B, 4, 4, 8, 8): every cell constant
    assert bool((blocks.amax(dim=(-1, -2)) == blocks.amin(dim=(-1, -2))).all())


def test_switch_elem_mixes_both_kinds():
    m = create_mixer("switch", num_classes=64, mode="elem", seed=0)
    r = m(torch.rand(64, 3, 16, 16), torch.arange(64))
    cut = r.params["use_cutmix"]
    assert 0 < int(cut.sum()) < 64
    flat = r.mask.flatten(1)
    assert bool(((flat == 0) | (flat == 1)).all(dim=1)[cut].all())       # cutmix rows: hard masks
    assert bool((flat.amax(1) == flat.amin(1))[~cut].all())              # mixup rows: constant share


def test_switch_prob_zero_leaves_images_unmixed():
    x = torch.rand(4, 3, 8, 8)
    r = create_mixer("switch", num_classes=4, prob=0.0, seed=0)(x, torch.arange(4))
    torch.testing.assert_close(r.images, x)
    torch.testing.assert_close(r.lam, torch.ones(4))


def test_lumix_perturbs_labels_not_pixels():
    x, y = torch.rand(6, 3, 16, 16), torch.arange(6)
    base = create_mixer("cutmix", num_classes=6, seed=9)(x, y)
    lu = create_mixer("lumix", base="cutmix", num_classes=6, noise=0.2, seed=9)(x, y)
    torch.testing.assert_close(lu.images, base.images)
    assert bool(((lu.lam - base.lam).abs() <= 0.2 + 1e-6).all()) and not torch.equal(lu.lam, base.lam)
    torch.testing.assert_close(lu.targets.sum(1), torch.ones(6))
    pred = create_mixer("lumix", base="mixup", num_classes=6, pred_weight=1.0, noise=0.0, seed=0)
    r = pred(x, y)
    logits = torch.full((6, 6), -10.0)
    logits[torch.arange(6), y] = 5.0
    relabelled = pred.relabel(r, logits=logits)
    assert bool((relabelled.lam > 0.99).all())
    with pytest.raises(ValueError, match="itself"):
        create_mixer("lumix", base="lumix")


@needs_cuda
@pytest.mark.parametrize("name", ALL_CLASSIC)
def test_cuda_matches_cpu(name):
    x, y = torch.rand(6, 3, 20, 20), torch.arange(6)
    m = create_mixer(name, num_classes=6, seed=0)
    params = m.sample(x, y, generator=torch.Generator().manual_seed(0))
    cpu = m.apply(x, y, params)
    gpu = m.apply(x.cuda(), y.cuda(), params)
    assert gpu.images.is_cuda and gpu.targets.is_cuda
    torch.testing.assert_close(gpu.images.cpu(), cpu.images, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gpu.targets.cpu(), cpu.targets)
    own, partner = gpu.replay(torch.ones(x.shape[0], 1, 20, 20, device="cuda"))
    torch.testing.assert_close(own.cpu(), cpu.replay(torch.ones(6, 1, 20, 20))[0], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", PAIR_MIXERS + ["bc_plus"])
def test_caller_fixed_partners_are_used(name):
    index = torch.tensor([3, 2, 1, 0])
    r = create_mixer(name, num_classes=4, seed=0)(torch.rand(4, 3, 16, 16), torch.arange(4), index=index)
    assert torch.equal(r.index.cpu(), index)
    with pytest.raises(MixerInputError, match="index="):
        create_mixer(name, num_classes=4)(torch.rand(4, 3, 16, 16), torch.arange(4), index=torch.tensor([0, 9, 1, 2]))


# ----------------------------------------------------------------------------------------------------------
# Kernel regressions (issue 17): the optimised FMix, SpliceMix and BC+ kernels against straightforward
# references written here, on small seeded batches, with blocks small enough that the blockwise paths run.
@pytest.fixture
def small_blocks(monkeypatch):
    """CPU blocks of about 3 rows of 32 x 32 floats, so every blockwise loop takes several turns."""
    import gazemix.mixers._blocks as blocks
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 3 * 32 * 32 * 4)


def fmix_reference(x, y, num_classes, seed, *, alpha=1.0, decay_power=3.0, mode="elem"):
    """FMix from the official recipe, drawn in the mixer's order: lam, real and imaginary spectra, rounding, partners.

    Returns (mask (n, 1, H, W) bool, lam (B,), index (B,), mixed images, targets); the mask is the top k of a
    full descending sort.
    """
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = x.shape
    n = 1 if mode == "batch" else b
    a = torch.full((n,), alpha, dtype=torch.float64)
    g1, g2 = torch._standard_gamma(a, generator=g), torch._standard_gamma(a, generator=g)
    lam = (g1 / (g1 + g2)).float()
    freqs = torch.sqrt(torch.fft.fftfreq(h).view(-1, 1) ** 2 + torch.fft.rfftfreq(w).view(1, -1) ** 2)
    scale = 1.0 / freqs.clamp_min(1.0 / max(h, w)) ** decay_power
    re = torch.randn((n, h, w // 2 + 1), generator=g) * scale
    im = torch.randn((n, h, w // 2 + 1), generator=g) * scale
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # MKL's inverse FFT is bit-exact only at a fixed thread count; the mixer uses one
    try:
        grey = torch.fft.irfft2(torch.complex(re, im), s=(h, w)).reshape(n, -1)
    finally:
        torch.set_num_threads(threads)
    round_up = torch.rand(n, generator=g) > 0.5
    masks = []
    for i in range(n):
        raw = float(lam[i].double()) * h * w
        k = math.ceil(raw) if round_up[i] else math.floor(raw)
        ordered = grey[i].sort(descending=True).values
        masks.append(grey[i] >= ordered[k - 1] if k > 0 else torch.zeros(h * w, dtype=torch.bool))
    mask = torch.stack(masks).view(n, 1, h, w)
    index = torch.randperm(b, generator=g)
    mixed = torch.where(mask, x, x[index])
    onehot = torch.nn.functional.one_hot(y, num_classes).float()
    lam = lam.expand(b)
    targets = lam.view(-1, 1) * onehot + (1 - lam).view(-1, 1) * onehot[index]
    return mask, lam, index, mixed, targets


@pytest.mark.parametrize("mode,hw,options", [("elem", (32, 32), {}), ("elem", (33, 37), {"alpha": 0.3}),
                                             ("batch", (32, 32), {}), ("elem", (16, 24), {"decay_power": 1.5})])
def test_fmix_kernel_matches_reference(mode, hw, options, small_blocks):
    b = 9
    gen = torch.Generator().manual_seed(4)
    x, y = torch.rand(b, 3, *hw, generator=gen), torch.randint(0, 5, (b,), generator=gen)
    for seed in (0, 1, 2):
        mask, lam, index, mixed, targets = fmix_reference(x, y, 5, seed, mode=mode, **options)
        r = create_mixer("fmix", num_classes=5, mode=mode, **options)(x, y, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(r.params["mask"], mask)  # same masks, bit for bit
        assert torch.equal(r.lam, lam) and torch.equal(r.index, index)
        assert torch.equal(r.images, mixed)  # a 0/1 share copies pixels exactly
        assert torch.equal(r.targets, targets)


def test_fourier_masks_equal_the_whole_batch_computation(small_blocks):
    from gazemix.mixers.fmix import binarise_top_k, fourier_masks, low_frequency_images, low_frequency_spectra
    spectra = low_frequency_spectra(10, (32, 32), 3.0, torch.Generator().manual_seed(0))
    lam, round_up = torch.rand(10), torch.rand(10) > 0.5
    lam[3], lam[4] = 0.0, 1.0  # no own pixel, every own pixel
    grey = low_frequency_images(10, (32, 32), 3.0, torch.Generator().manual_seed(0))
    masks = fourier_masks(spectra, lam, round_up, (32, 32))
    assert torch.equal(masks, binarise_top_k(grey, lam, round_up))
    assert int(masks[3].sum()) == 0 and bool(masks[4].all())


def bilinear_align_corners(img, size):
    """Bilinear resize with align_corners=True, in float64 from the textbook formula."""
    c, h, w = img.shape
    out_h, out_w = size
    img = img.double()

    def taps(n_in, n_out):
        src = torch.arange(n_out, dtype=torch.float64) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        lo = src.floor().long().clamp(max=n_in - 1)
        return lo, (lo + 1).clamp(max=n_in - 1), src - lo
    y0, y1, wy = taps(h, out_h)
    x0, x1, wx = taps(w, out_w)
    top = img[:, y0][:, :, x0] * (1 - wx) + img[:, y0][:, :, x1] * wx
    bottom = img[:, y1][:, :, x0] * (1 - wx) + img[:, y1][:, :, x1] * wx
    return top * (1 - wy).view(-1, 1) + bottom * wy.view(-1, 1)


@pytest.mark.parametrize("grid_probs,hw,drop_prob", [((0.0, 1.0, 0.0), (32, 32), 0.0),   # 2x2, one cell size
                                                     ((0.0, 0.0, 1.0), (33, 37), 1.0),   # 2x3 / 3x2, four sizes
                                                     ((1.0, 0.0, 0.0), (20, 30), 1.0),   # 1x2 / 2x1
                                                     ((0.3, 0.4, 0.3), (24, 24), 0.3)])
def test_splicemix_kernel_matches_reference(grid_probs, hw, drop_prob):
    h, w = hw
    for b, seed in ((8, 0), (16, 1), (13, 2), (16, 5)):
        gen = torch.Generator().manual_seed(seed)
        x, y = torch.rand(b, 3, h, w, generator=gen), torch.randint(0, 6, (b,), generator=gen)
        r = create_mixer("splicemix", num_classes=6, grid_probs=grid_probs, drop_prob=drop_prob)(
            x, y, generator=torch.Generator().manual_seed(seed))
        rows, cols = r.params["grid"]
        tiles, dropped = r.params["tiles"], r.params["dropped"]
        n_mix = b // 4
        assert tiles.shape == (n_mix, rows * cols)
        assert torch.equal(r.images[:b], x)
        onehot = torch.nn.functional.one_hot(y, 6).float()
        for m in range(n_mix):
            expected = torch.zeros(3, h, w, dtype=torch.float64)
            label = torch.zeros(6)
            for k in range(rows * cols):
                y0, y1 = (k // cols) * h // rows, (k // cols + 1) * h // rows
                x0, x1 = (k % cols) * w // cols, (k % cols + 1) * w // cols
                own_cell = torch.zeros(1, h, w, dtype=torch.bool)
                if not dropped[m, k]:
                    expected[:, y0:y1, x0:x1] = bilinear_align_corners(x[tiles[m, k]], (y1 - y0, x1 - x0))
                    label = torch.maximum(label, onehot[tiles[m, k]])
                    own_cell[:, y0:y1, x0:x1] = True
                source = r.sources[k]
                assert int(source.index[b + m]) == int(tiles[m, k])
                assert torch.equal(source.share[b + m].bool(), own_cell)
                assert float(source.weight[b + m]) == float(not dropped[m, k])
            torch.testing.assert_close(r.images[b + m].double(), expected, rtol=0, atol=1e-5)  # float32 weights
            assert torch.equal(r.targets[b + m], label)
        for k, source in enumerate(r.sources):  # the originals: own image in source 0 only
            assert bool((source.share[:b] == (k == 0)).all()) and torch.equal(source.index[:b], torch.arange(b))
        torch.testing.assert_close(r.targets[:b], onehot)


def bc_plus_reference(x, index, r):
    """BC+ in float64, image by image: zero-mean waveforms mixed with p and renormalised (unpaired: r = 1)."""
    out, ps = [], []
    for i in range(x.shape[0]):
        j = int(index[i])
        ri = float(r[i]) if j != i else 1.0
        xi, xj = x[i].double(), x[j].double()
        si, sj = float(xi.std(unbiased=False)), float(xj.std(unbiased=False))
        p = ri if not (si > 0 and sj > 0) else 1.0 / (1.0 + (si / sj) * (1.0 - ri) / ri)
        ps.append(p)
        out.append((p * (xi - xi.mean()) + (1 - p) * (xj - xj.mean())) / math.sqrt(p ** 2 + (1 - p) ** 2))
    return torch.stack(out), torch.tensor(ps, dtype=torch.float64)


@pytest.mark.parametrize("hw", [(32, 32), (33, 37)])
def test_bc_plus_kernel_matches_reference(hw, small_blocks):
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(10, 3, *hw, generator=gen) * 4 - 1
    x[2] = 0.1  # a constant image: its std is exactly 0, so p falls back to r
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 3, 4])
    for seed in (0, 1):
        res = create_mixer("bc_plus", num_classes=5)(x, y, generator=torch.Generator().manual_seed(seed))
        index, r = res.params["index"], res.params["r"]
        expected, p = bc_plus_reference(x, index, r)
        torch.testing.assert_close(res.images.double(), expected, rtol=1e-5, atol=2e-6)
        torch.testing.assert_close(res.params["p"].double(), p, rtol=1e-5, atol=0)
        assert float(res.params["p"][2]) == float(r[2])  # degenerate: exactly r
        lam = torch.where(index == torch.arange(10), torch.ones(10), r)
        onehot = torch.nn.functional.one_hot(y, 5).float()
        torch.testing.assert_close(res.targets, lam.view(-1, 1) * onehot + (1 - lam).view(-1, 1) * onehot[index])


def test_image_std_mean_equals_torch_std_mean(small_blocks):
    from gazemix.mixers.bc import image_std_mean
    x = torch.rand(11, 3, 32, 32) * 10 - 3
    x[4] = 1 / 3  # constant: std exactly 0 even though the rounded mean may differ from 1/3
    std, mean = image_std_mean(x)
    ref_std, ref_mean = torch.std_mean(x, dim=(1, 2, 3), correction=0)
    torch.testing.assert_close(std, ref_std, rtol=1e-5, atol=0)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-6, atol=1e-6)
    assert float(std[4]) == 0.0
    empty_std, empty_mean = image_std_mean(torch.rand(3, 0, 4, 4))
    assert torch.equal(empty_std, torch.zeros(3)) and torch.equal(empty_mean, torch.zeros(3))


def test_fmix_masks_do_not_depend_on_the_thread_count():
    # MKL's inverse FFT on two threads can differ from one thread in the last bit; with one batched FFT that moved a
    # pixel across the top-k threshold for this batch and seed. The masks' FFTs now always run on one thread.
    x, y = torch.zeros(128, 1, 64, 64), torch.arange(128) % 5
    threads = torch.get_num_threads()
    masks = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            r = create_mixer("fmix", num_classes=5, mode="elem")(x, y, generator=torch.Generator().manual_seed(10))
            masks.append(r.params["mask"])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(masks[0], masks[1])
