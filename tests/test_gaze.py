"""Gaze-map rendering: hand-computed maps, registration with image transforms, empty-map policy, cache."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
from scipy.special import ndtr

import gazemix.gaze as gaze
from data_adapters.base import Fixations
from gazemix.gaze import (EmptyGazeError, count_maps, crop_flip, default_sigma_px, fit_geometry, fit_image,
                          render_gaze_maps, sample_crop_boxes)

SHARED = Path(__file__).resolve().parents[2] / "shared"


def fix(xs, ys, durs=None, obs=None) -> Fixations:
    xs = np.asarray(xs, dtype=float)
    durs = np.full(len(xs), 200.0) if durs is None else np.asarray(durs, dtype=float)
    obs = np.zeros(len(xs), dtype=np.int64) if obs is None else np.asarray(obs)
    return Fixations(xs, np.asarray(ys, dtype=float), durs, obs)


def reference_map(points, weights, hw, sigma_y, sigma_x, scale=(1.0, 1.0), offset=(0, 0)):
    """Pixel-integrated Gaussians, computed independently with scipy (edge coordinates, centre = x + 0.5)."""
    h, w = hw
    out = np.zeros(hw)
    for (x, y), wt in zip(points, weights):
        u = (x + 0.5) * scale[1] - offset[1]
        v = (y + 0.5) * scale[0] - offset[0]
        px = ndtr((np.arange(1, w + 1) - u) / sigma_x) - ndtr((np.arange(w) - u) / sigma_x)
        py = ndtr((np.arange(1, h + 1) - v) / sigma_y) - ndtr((np.arange(h) - v) / sigma_y)
        out += wt * np.outer(py, px)
    return out / out.sum()


def test_single_fixation_matches_hand_computed_gaussian():
    g = render_gaze_maps([fix([7], [4])], [(12, 16)], (12, 16), sigma_px=2.0)
    ref = reference_map([(7, 4)], [1.0], (12, 16), 2.0, 2.0)
    assert g.maps.shape == (1, 1, 12, 16) and g.maps.dtype == torch.float32
    assert g.valid.tolist() == [True]
    np.testing.assert_allclose(g.maps[0, 0].numpy(), ref, atol=1e-6)
    assert g.maps.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert np.unravel_index(int(g.maps.argmax()), (12, 16)) == (4, 7)


def test_resize_scales_positions_and_sigma_per_axis():
    # a 40x100 image squeezed to 20x20: x scale 0.2, y scale 0.5, so the Gaussian becomes anisotropic
    g = render_gaze_maps([fix([30, 80], [10, 25])], [(40, 100)], (20, 20), sigma_px=6.0)
    ref = reference_map([(30, 10), (80, 25)], [1, 1], (20, 20), 6.0 * 0.5, 6.0 * 0.2, scale=(0.5, 0.2))
    np.testing.assert_allclose(g.maps[0, 0].numpy(), ref, atol=1e-6)


def test_subpixel_position_splits_mass_evenly():
    g = render_gaze_maps([fix([10.5], [5.0])], [(11, 22)], (11, 22), sigma_px=1.5).maps[0, 0]
    assert g[5, 10].item() == pytest.approx(g[5, 11].item(), rel=1e-5)
    assert torch.allclose(g, g.flip(-1), atol=1e-7)  # 22 columns mirrored about the edge at 11 = 10.5 + 0.5


def test_center_crop_geometry_matches_torchvision():
    for size in [(40, 60), (60, 40), (33, 97), (50, 50)]:
        img = torch.rand(3, *size)
        ref = T.Compose([T.Resize(24, antialias=True), T.CenterCrop(24)])(img)
        assert torch.allclose(fit_image(img, (24, 24), "center_crop"), ref)
    assert fit_geometry((40, 60), (20, 20), "center_crop") == (20, 30, 0, 5)
    assert fit_geometry((40, 60), (20, 20), "resize") == (20, 20, 0, 0)


@pytest.mark.parametrize("fit", ["resize", "center_crop"])
def test_map_stays_registered_to_the_fitted_image(fit):
    h, w = 60, 90
    img = torch.zeros(1, h, w)
    img[0, 20:23, 70:73] = 1.0  # a bright 3x3 patch centred on pixel (x=71, y=21)
    small = fit_image(img, (30, 30), fit)[0]
    g = render_gaze_maps([fix([71], [21])], [(h, w)], (30, 30), sigma_px=1.0, fit=fit).maps[0, 0]
    peak_img = np.unravel_index(int(small.argmax()), small.shape)
    peak_map = np.unravel_index(int(g.argmax()), g.shape)
    assert abs(peak_img[0] - peak_map[0]) <= 1 and abs(peak_img[1] - peak_map[1]) <= 1
    if fit == "center_crop":  # resized to 30x45, crop from column 8: x = 71.5 * 0.5 - 8 = 27.75
        assert peak_map[1] == 27


def test_duration_weighting_and_minimum_duration():
    f = fix([5, 35], [5, 5], durs=[100, 300])
    plain = render_gaze_maps([f], [(10, 40)], (10, 40), sigma_px=1.0).maps[0, 0]
    weighted = render_gaze_maps([f], [(10, 40)], (10, 40), sigma_px=1.0, weight_by_duration=True).maps[0, 0]
    assert plain[:, :20].sum().item() == pytest.approx(0.5, abs=1e-4)
    assert weighted[:, :20].sum().item() == pytest.approx(0.25, abs=1e-4)
    g = render_gaze_maps([f], [(10, 40)], (10, 40), sigma_px=1.0, min_duration_ms=150)
    assert g.report.dropped_short == 1 and g.maps[0, 0, :, :20].sum().item() < 1e-4
    with pytest.raises(ValueError, match="duration"):
        render_gaze_maps([fix([1], [1], durs=[np.nan])], [(4, 4)], (4, 4), weight_by_duration=True)


def test_default_sigma_is_five_percent_of_long_side():
    f = [fix([100, 300], [50, 120])]
    assert default_sigma_px((375, 500)) == 25.0
    a = render_gaze_maps(f, [(375, 500)], (32, 32)).maps
    b = render_gaze_maps(f, [(375, 500)], (32, 32), sigma_px=25.0).maps
    assert torch.equal(a, b)
    assert render_gaze_maps(f, [(375, 500)], (32, 32)).report.params["sigma_rule"].startswith("0.05")


def test_empty_and_invalid_maps_follow_the_policy():
    fx = [fix([3], [3]), Fixations.empty(), fix([np.nan, 50], [2, 2]), fix([1], [1])]
    sizes = [(8, 8), (8, 8), (8, 8), (200, 200)]  # image 2: one NaN fixation and one outside the image
    with pytest.raises(EmptyGazeError, match="on_empty"):
        render_gaze_maps(fx, sizes, (8, 8))
    g = render_gaze_maps(fx, sizes, (8, 8), on_empty="skip", sigma_px=0.5)
    assert g.valid.tolist() == [True, False, False, True]
    assert g.report.empty == [1, 2] and g.report.dropped_nonfinite == 1 and g.report.dropped_outside == 1
    assert torch.isnan(g.maps[1]).all() and torch.isnan(g.maps[2]).all()
    assert g.maps[0].sum().item() == pytest.approx(1.0, abs=1e-5)
    u = render_gaze_maps(fx, sizes, (8, 8), on_empty="uniform", sigma_px=0.5)
    assert u.valid.tolist() == [True, False, False, True]
    assert torch.allclose(u.maps[1], torch.full((1, 8, 8), 1 / 64))
    assert "2 without fixations" in u.report.summary()


def test_fixation_cropped_out_of_view_is_zero_mass():
    # 20x200 image, centre crop to 20x20 keeps columns 90..109; a fixation at x=5 is 85 px (17 sigma) away
    g = render_gaze_maps([fix([5], [10]), fix([100], [10])], [(20, 200)] * 2, (20, 20), sigma_px=5.0,
                         fit="center_crop", on_empty="skip")
    assert g.valid.tolist() == [False, True] and g.report.zero_mass == [0]


def test_batch_equals_one_by_one_and_inputs_untouched():
    rng = np.random.default_rng(0)
    fx, sizes = [], []
    for k in [3, 0, 7, 1, 12, 5]:
        h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        fx.append(fix(rng.integers(0, w, k), rng.integers(0, h, k), rng.integers(60, 900, k)))
        sizes.append((h, w))
    before = [f.x.copy() for f in fx]
    batch = render_gaze_maps(fx, sizes, (16, 24), chunk=2, on_empty="skip", weight_by_duration=True)
    for i, (f, s) in enumerate(zip(fx, sizes)):
        if len(f):
            one = render_gaze_maps([f], [s], (16, 24), weight_by_duration=True).maps[0]
            assert torch.allclose(batch.maps[i], one, atol=1e-7)
    assert all(np.array_equal(b, f.x) for b, f in zip(before, fx))


def test_cache_round_trip(tmp_path, monkeypatch):
    fx = [fix([3, 10], [4, 6]), fix([1], [2])]
    a = render_gaze_maps(fx, [(16, 16)] * 2, (8, 8), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("gaze-*.npy"))) == 1 and len(list(tmp_path.glob("gaze-*.json"))) == 1
    monkeypatch.setattr(gaze, "_profiles", lambda *a, **k: pytest.fail("cached maps were re-rendered"))
    b = render_gaze_maps(fx, [(16, 16)] * 2, (8, 8), cache_dir=tmp_path)
    assert torch.equal(a.maps, b.maps) and torch.equal(a.valid, b.valid)
    assert b.report.params == a.report.params
    monkeypatch.undo()
    render_gaze_maps(fx, [(16, 16)] * 2, (8, 8), cache_dir=tmp_path, sigma_px=3.0)  # new key
    fx[0].x[0] = 4.0  # new data, new key
    render_gaze_maps(fx, [(16, 16)] * 2, (8, 8), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("gaze-*.npy"))) == 3


def test_count_maps_keep_duplicates_and_follow_the_fit():
    c = count_maps([fix([2, 2, 9, 99], [1, 1, 3, 0])], [(10, 20)], (5, 10))
    assert c.shape == (1, 5, 10) and c.sum().item() == 3  # x=99 lies outside the 20-px image
    assert c[0, 0, 1].item() == 2 and c[0, 1, 4].item() == 1


def test_crop_flip_identity_flip_and_mass():
    g = render_gaze_maps([fix([3], [5]), fix([12], [2])], [(16, 16)] * 2, (16, 16), sigma_px=1.0).maps
    imgs = torch.rand(2, 3, 16, 16)
    full = torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 2)
    i2, g2, ok = crop_flip(imgs, g, full, torch.tensor([False, True]), (16, 16))
    assert ok.all()
    assert torch.allclose(i2[0], imgs[0], atol=1e-6) and torch.allclose(i2[1], imgs[1].flip(-1), atol=1e-6)
    assert torch.allclose(g2[0], g[0], atol=1e-6) and torch.allclose(g2[1], g[1].flip(-1), atol=1e-6)
    # left half of image 0 (its fixation is at x=3): the crop's map is the density restricted to it
    i3, g3, ok = crop_flip(imgs, g, torch.tensor([[0.0, 0.0, 16.0, 8.0], [0.0, 0.0, 16.0, 2.0]]),
                           torch.tensor([False, False]), (16, 8))
    assert torch.allclose(g3[0], g[0, :, :, :8] / g[0, :, :, :8].sum(), atol=1e-6)
    assert g3.shape == (2, 1, 16, 8) and torch.allclose(i3[0], imgs[0, :, :, :8], atol=1e-6)
    assert g3[1].sum().item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="boxes"):
        crop_flip(imgs, g, full[:1], torch.tensor([False, True]), (8, 8))


def test_sample_crop_boxes_seeded_and_inside():
    b1 = sample_crop_boxes(500, (40, 60), generator=torch.Generator().manual_seed(3))
    b2 = sample_crop_boxes(500, (40, 60), generator=torch.Generator().manual_seed(3))
    assert torch.equal(b1, b2) and b1.shape == (500, 4)
    assert (b1[:, 0] >= 0).all() and (b1[:, 1] >= 0).all() and (b1[:, 2] <= 40).all() and (b1[:, 3] <= 60).all()
    area = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1]) / (40 * 60)
    assert (area > 0.05).all() and (area <= 1.0).all()
    with pytest.raises(ValueError, match="scale"):
        sample_crop_boxes(2, (8, 8), scale=(0.5, 0.1))


def test_bad_arguments_name_what_to_pass():
    with pytest.raises(ValueError, match="sizes has 2 entries"):
        render_gaze_maps([fix([1], [1])], [(4, 4), (4, 4)], (4, 4))
    with pytest.raises(ValueError, match="on_empty"):
        render_gaze_maps([fix([1], [1])], [(4, 4)], (4, 4), on_empty="ignore")
    with pytest.raises(ValueError, match="sigma_px"):
        render_gaze_maps([fix([1], [1])], [(4, 4)], (4, 4), sigma_px=-1)
    with pytest.raises(ValueError, match="fit"):
        render_gaze_maps([fix([1], [1])], [(4, 4)], (4, 4), fit="crop")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    fx = [fix([3, 10, 20], [4, 6, 1]), fix([1], [2])]
    cpu = render_gaze_maps(fx, [(24, 32)] * 2, (16, 16))
    gpu = render_gaze_maps(fx, [(24, 32)] * 2, (16, 16), device="cuda")
    assert gpu.maps.is_cuda and torch.allclose(gpu.maps.cpu(), cpu.maps, atol=1e-6)
    imgs = torch.rand(2, 3, 16, 16, device="cuda")
    boxes = sample_crop_boxes(2, (16, 16), generator=torch.Generator().manual_seed(0))
    i2, g2, ok = crop_flip(imgs, gpu.maps, boxes, torch.tensor([True, False], device="cuda"), (8, 8))
    assert i2.is_cuda and g2.is_cuda and torch.allclose(g2[ok].sum(dim=(1, 2, 3)), torch.ones(int(ok.sum()), device="cuda"))


@pytest.mark.skipif(not SHARED.exists(), reason="../shared (real CUB-GHA files) is absent")
def test_real_cub_gha_maps_render():
    from data_adapters.cub_gha import CubGha
    data = CubGha(SHARED / "data" / "cub_gha", runs=(1,))
    samples = data.samples[:300]
    g = render_gaze_maps([s.fixations for s in samples], [s.size for s in samples], (64, 64))
    assert g.valid.all() and torch.allclose(g.maps.sum(dim=(1, 2, 3)), torch.ones(300), atol=1e-4)
