"""Saliency metrics: pysaliency's own fixture numbers, identities, invariances and hand-computed values."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from gazemix.metrics import auc_borji, auc_judd, auc_shuffled, auc_uniform, cc, info_gain, kld, nss, sim

SHARED = Path(__file__).resolve().parents[2] / "shared"

# pysaliency tests/test_saliency_map_models.py: two 40x40 stimuli, S = exp(-0.5 r^2 / size), size = sqrt(40^2 + 40^2)
YY, XX = np.mgrid[:40, :40]
GAUSS = np.exp(-0.5 * ((XX - 20) ** 2 + (YY - 20) ** 2) / math.sqrt(40 ** 2 + 40 ** 2))
FIXATIONS = [(0, 0, 10), (0, 1, 11), (0, 2, 12), (0, 2, 12), (0, 2, 12), (1, 1, 21), (1, 5, 25), (1, 3, 33)]  # (image, x, y)


def counts(points, n_images=2) -> np.ndarray:
    c = np.zeros((n_images, 40, 40))
    for i, x, y in points:
        c[i, y, x] += 1
    return c


SAL = np.stack([GAUSS, GAUSS])
FIX = counts(FIXATIONS)
PER_FIXATION = np.stack([counts([(0, x, y)], 1)[0] for _, x, y in FIXATIONS])  # one fixation per row
# pysaliency FixationMap(kernel_size=10, ignore_doublicates=True): binary map blurred by scipy (reflect)
GOLD = np.stack([gaussian_filter((FIX[i] > 0).astype(float), 10, mode="reflect") for i in range(2)])


def test_pysaliency_fixture_auc():
    per_fix = auc_uniform(np.stack([GAUSS] * 8), PER_FIXATION)
    np.testing.assert_allclose(per_fix, [0.099375, 0.158125, 0.241875, 0.241875, 0.241875, 0.291875, 0.509375,
                                         0.138125], rtol=1e-6)
    per_image = auc_uniform(SAL, FIX)
    np.testing.assert_allclose(per_image, [0.196625, 0.313125], rtol=1e-6)
    np.testing.assert_allclose((per_image * torch.tensor([5.0, 3.0])).sum() / 8, 0.2403125, rtol=1e-9)
    np.testing.assert_allclose(per_image.mean(), 0.254875, rtol=1e-9)
    np.testing.assert_allclose(auc_judd(SAL, FIX).mean(), 0.44504278856188684, rtol=1e-9)


def test_pysaliency_fixture_shuffled_auc():
    # negatives of every fixation of image 0: the fixations of image 1, and vice versa
    others = np.stack([FIX[1 - i] for i, _, _ in FIXATIONS])
    per_fix = auc_shuffled(np.stack([GAUSS] * 8), PER_FIXATION, others)
    np.testing.assert_allclose(per_fix, [0.0, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 1.0, 1.0, 0.2], rtol=1e-6)
    np.testing.assert_allclose(auc_shuffled(SAL, FIX), [4 / 15, 2.2 / 3], rtol=1e-9)  # the batch's other image


def test_pysaliency_fixture_nss():
    per_fix = nss(np.stack([GAUSS] * 8), PER_FIXATION)
    np.testing.assert_allclose(per_fix, [-0.821596006113, -0.789526121554, -0.740616174533, -0.740616174533,
                                         -0.740616174533, -0.707322347863, -0.433094498355, -0.800070419267], rtol=1e-6)
    per_image = nss(SAL, FIX)
    np.testing.assert_allclose(per_image.mean(), -0.706711609374163, rtol=1e-9)
    np.testing.assert_allclose((per_image * torch.tensor([5.0, 3.0])).sum() / 8, -0.721682239593952, rtol=1e-9)


def test_pysaliency_fixture_cc_sim_kld():
    np.testing.assert_allclose(cc(SAL, GOLD).mean(), -0.1542654, rtol=1e-5)
    np.testing.assert_allclose(sim(SAL, np.ones_like(SAL)).mean(), 0.54392, rtol=1e-5)
    np.testing.assert_allclose(sim(SAL, np.zeros_like(SAL)).mean(), 0.54392, rtol=1e-5)  # zero mass reads as uniform
    np.testing.assert_allclose(sim(SAL, GOLD).mean(), 0.315899, rtol=1e-5)
    # pysaliency image_based_kl_divergence, also with the MIT settings (log/quotient regularisation 2.2204e-16)
    np.testing.assert_allclose(kld(SAL, np.ones_like(SAL)).mean(), 0.8396272788909165, rtol=1e-9)
    np.testing.assert_allclose(kld(SAL, GOLD).mean(), 2.029283206727416, rtol=1e-6)


def test_constant_maps_are_chance():
    const = np.ones_like(SAL) * 3.0
    for auc in (auc_uniform(const, FIX), auc_judd(const, FIX), auc_shuffled(const, FIX),
                auc_borji(const, FIX, generator=torch.Generator().manual_seed(0))):
        np.testing.assert_allclose(auc, [0.5, 0.5])
    np.testing.assert_allclose(nss(const, FIX), [0.0, 0.0])
    np.testing.assert_allclose(cc(const, GOLD), [0.0, 0.0])
    np.testing.assert_allclose(cc(GOLD, const), [0.0, 0.0])


def test_identities():
    g = torch.as_tensor(GOLD)
    np.testing.assert_allclose(cc(g, g), [1.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(sim(g, g), [1.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(kld(g, g), [0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(info_gain(g, FIX, g), [0.0, 0.0], atol=1e-12)
    assert (nss(g, FIX) > 0).all()  # a map built from fixations scores its own fixations above chance
    assert (auc_uniform(g, FIX) > 0.9).all() and (auc_judd(g, FIX) > 0.9).all()
    assert (info_gain(g, FIX) > 0).all()  # better than uniform


def test_invariances_and_symmetry():
    g, s = torch.as_tensor(GOLD), torch.as_tensor(SAL)
    np.testing.assert_allclose(auc_uniform(torch.exp(5 * s), FIX), auc_uniform(s, FIX), rtol=1e-12)
    np.testing.assert_allclose(auc_judd(s ** 3, FIX), auc_judd(s, FIX), rtol=1e-12)
    np.testing.assert_allclose(nss(2 * s + 7, FIX), nss(s, FIX), rtol=1e-9)
    np.testing.assert_allclose(cc(2 * s + 7, g), cc(s, g), rtol=1e-9)
    np.testing.assert_allclose(kld(5 * s, g), kld(s, g), rtol=1e-9)
    np.testing.assert_allclose(sim(5 * s, g), sim(s, g), rtol=1e-9)
    assert not torch.allclose(kld(s + 1, g), kld(s, g))  # the floor matters
    np.testing.assert_allclose(cc(s, g), cc(g, s), rtol=1e-12)
    np.testing.assert_allclose(sim(s, g), sim(g, s), rtol=1e-12)
    assert not torch.allclose(kld(s, g), kld(g, s))  # KLD is asymmetric: reference second


def test_hand_computed_small_maps():
    m = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    at = lambda r, c: torch.zeros(2, 2).index_put_((torch.tensor([r]), torch.tensor([c])), torch.tensor([1.0]))
    assert nss(m, at(1, 1)).item() == pytest.approx(1.5 / math.sqrt(1.25))
    assert auc_uniform(m, at(1, 0)).item() == pytest.approx((2 + 0.5) / 4)  # 2 below, 1 tie (itself)
    # Judd, fixation on value 2: thresholds {2}: TP 1, FP = #{unfixated >= 2} / 3 = 1/3 -> area 1 - 1/3 / 2
    assert auc_judd(m, at(1, 0)).item() == pytest.approx(1 - (1 / 3) / 2)
    g = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    u = torch.ones(2, 2)
    assert kld(u, g).item() == pytest.approx(math.log(2.0))
    assert sim(u, g).item() == pytest.approx(0.5)
    p = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    assert info_gain(p, at(1, 1)).item() == pytest.approx(math.log2(0.4 / 0.25))
    assert info_gain(p, at(1, 1), minmax=True).item() == pytest.approx(math.log2((1.0 / 2.0) / 0.25))
    # minmax p = [0, 1/3, 2/3, 1] / 2; a constant map min-maxes to zeros and then reads as uniform
    assert sim(p, u, minmax=True).item() == pytest.approx(0 + 1 / 6 + 1 / 4 + 1 / 4)


def test_auc_borji_one_fixated_pixel_has_a_value_unless_the_mit_rule_is_asked():
    delta = np.zeros((1, 40, 40))
    delta[0, 12, 2] = 1.0
    one, two = counts([(0, 2, 12)], 1), counts([(0, 2, 12), (0, 30, 30)], 1)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert auc_borji(delta, one, generator=g()).item() > 0.95
    assert math.isnan(auc_borji(delta, one, min_fixated=2, generator=g()).item())  # MIT: NaN for <= 1 fixated pixel
    assert auc_borji(delta, two, min_fixated=2, generator=g()).item() == auc_borji(delta, two, generator=g()).item()
    assert math.isnan(auc_borji(delta, np.zeros((1, 40, 40)), generator=g()).item())  # no fixation: NaN either way
    with pytest.raises(ValueError, match="min_fixated"):
        auc_borji(delta, one, min_fixated=0)


def test_auc_borji_seeded_and_sane():
    delta = np.zeros((1, 40, 40))
    delta[0, 12, 2] = 1.0
    f = counts([(0, 2, 12)], 1)
    g1 = auc_borji(delta, f, generator=torch.Generator().manual_seed(1))
    assert g1.item() > 0.95  # only the fixated pixel is salient
    a = auc_borji(SAL, FIX, generator=torch.Generator().manual_seed(3))
    b = auc_borji(SAL, FIX, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and ((a >= 0) & (a <= 1)).all()
    # with many splits it approaches the exact AUC against all pixels (the same negatives in expectation)
    many = auc_borji(SAL, FIX, n_splits=4000, step=0.001, generator=torch.Generator().manual_seed(0))
    ref = torch.tensor([auc_uniform(GAUSS, (FIX[i] > 0).astype(float)).item() for i in range(2)], dtype=torch.float64)
    np.testing.assert_allclose(many, ref, atol=0.02)


def test_degenerate_and_bad_inputs():
    empty = np.zeros((1, 40, 40))
    assert torch.isnan(nss(SAL[:1], empty)).all() and torch.isnan(auc_judd(SAL[:1], empty)).all()
    assert torch.isnan(auc_uniform(SAL[:1], empty)).all() and torch.isnan(info_gain(SAL[:1], empty)).all()
    assert nss(GAUSS, FIX[0]).ndim == 0  # one (H, W) map gives a 0-d result
    bad = SAL.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="saliency contains NaN"):
        nss(bad, FIX)
    with pytest.raises(ValueError, match="resize the prediction"):
        cc(SAL[:, :20], GOLD)
    with pytest.raises(ValueError, match="non-negative counts"):
        nss(SAL, -FIX)
    with pytest.raises(ValueError, match="other images"):
        auc_shuffled(SAL[:1], FIX[:1])
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        sim(SAL[0, 0], GOLD[0, 0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    s, f, g = (torch.as_tensor(a) for a in (SAL, FIX, GOLD))
    for fn, args in [(nss, (s, f)), (auc_uniform, (s, f)), (auc_judd, (s, f)), (auc_shuffled, (s, f)),
                     (info_gain, (s, f)), (cc, (s, g)), (kld, (s, g)), (sim, (s, g))]:
        out = fn(*(a.cuda() for a in args))
        assert out.is_cuda and torch.allclose(out.cpu(), fn(*args), rtol=1e-9), fn.__name__
    gb = auc_borji(s.cuda(), f.cuda(), generator=torch.Generator().manual_seed(0))
    assert gb.is_cuda and torch.allclose(gb.cpu(), auc_borji(s, f, generator=torch.Generator().manual_seed(0)))


@pytest.mark.skipif(not SHARED.exists(), reason="../shared (real CUB-GHA files) is absent")
def test_cub_gha_human_agreement_matches_the_spec():
    """Runs 1-4 against run 5 on 150 images (spec gaze_humans.md §6.3 used 1,500 at full size)."""
    from data_adapters.base import Fixations
    from data_adapters.cub_gha import CubGha, observer_run
    from gazemix.gaze import count_maps, render_gaze_maps

    data = CubGha(SHARED / "data" / "cub_gha")
    pool = [s for s in data if 5 in s.meta["runs"] and len(s.meta["runs"]) > 1]
    chosen = [pool[i] for i in np.random.default_rng(0).choice(len(pool), 150, replace=False)]
    part = lambda f, keep: Fixations(f.x[keep], f.y[keep], f.duration_ms[keep], f.observer[keep])
    run5 = [part(s.fixations, observer_run(s.fixations.observer) == 5) for s in chosen]
    others = [part(s.fixations, observer_run(s.fixations.observer) != 5) for s in chosen]
    sizes, out = [s.size for s in chosen], (128, 128)
    g5 = render_gaze_maps(run5, sizes, out).maps[:, 0]
    go = render_gaze_maps(others, sizes, out).maps[:, 0]
    c5 = count_maps(run5, sizes, out)
    centre = go.mean(0, keepdim=True).expand_as(go)  # a data-driven centre prior
    assert nss(g5, c5).mean().item() == pytest.approx(5.73, abs=0.4)
    assert auc_uniform(g5, c5).mean().item() == pytest.approx(0.987, abs=0.01)
    assert nss(go, c5).mean().item() == pytest.approx(4.43, abs=0.4)
    assert auc_uniform(go, c5).mean().item() == pytest.approx(0.954, abs=0.015)
    assert cc(go, g5).mean().item() == pytest.approx(0.840, abs=0.05)
    assert sim(go, g5).mean().item() == pytest.approx(0.704, abs=0.04)
    assert kld(go, g5).mean().item() == pytest.approx(0.69, abs=0.3)  # heavy-tailed: sd 1.04 per image
    assert auc_uniform(centre, c5).mean().item() == pytest.approx(0.902, abs=0.02)
    assert auc_shuffled(centre, c5).mean().item() == pytest.approx(0.5, abs=0.05)  # sAUC discounts centre bias
