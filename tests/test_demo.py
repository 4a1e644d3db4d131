"""The synthetic demo set: API shapes, determinism, the class cues, and the premise (observers look at the object)."""

import numpy as np
import pytest
import torch

import torch.nn.functional as F

from gazemix.demo import CLASS_HUES, CLASS_NAMES, DemoSet, make_demo


@pytest.fixture(scope="module")
def demo() -> DemoSet:
    return make_demo(n=48, size=64, seed=1)


def test_shapes_types_and_ranges(demo):
    n, s = 48, 64
    assert len(demo) == n
    assert demo.images.shape == (n, 3, s, s) and demo.images.dtype == torch.float32
    assert 0.0 <= float(demo.images.min()) and float(demo.images.max()) <= 1.0
    assert demo.labels.shape == (n,) and demo.labels.dtype == torch.int64
    assert demo.class_names == CLASS_NAMES and int(demo.labels.max()) < len(CLASS_NAMES)
    assert demo.gaze.shape == (n, 1, s, s) and demo.gaze.dtype == torch.float32
    assert torch.allclose(demo.gaze.sum(dim=(1, 2, 3)), torch.ones(n), atol=1e-4)
    assert demo.object_masks.shape == (n, 1, s, s) and demo.object_masks.dtype == torch.bool
    assert (demo.object_masks.sum(dim=(1, 2, 3)) > 0).all()
    assert len(demo.fixations) == n
    for f in demo.fixations:
        assert 20 <= len(f) <= 40 and set(np.unique(f.observer)) == set(range(5))
        assert (f.x >= -0.5).all() and (f.x < s - 0.5).all() and (f.y >= -0.5).all() and (f.y < s - 0.5).all()
        assert (f.duration_ms >= 60).all()


def test_meta_says_synthetic(demo):
    assert demo.meta["synthetic"] is True and demo.meta["seed"] == 1
    assert "SYNTHETIC" in demo.meta["description"] and "CUB-GHA" in demo.meta["description"]


def test_seeded_and_reproducible(demo):
    again = make_demo(n=48, size=64, seed=1)
    assert torch.equal(again.images, demo.images) and torch.equal(again.gaze, demo.gaze)
    assert all(np.array_equal(a.x, b.x) for a, b in zip(again.fixations, demo.fixations))
    other = make_demo(n=48, size=64, seed=2)
    assert not torch.equal(other.images, demo.images)


def test_observers_look_at_the_object_more_than_bottom_up_saliency(demo):
    m = demo.object_masks.float()
    gaze_on_object = (demo.gaze * m).sum(dim=(1, 2, 3))
    area = m.mean(dim=(1, 2, 3))
    assert float(gaze_on_object.mean()) > 4 * float(area.mean())
    s = demo.images.shape[-1]
    on = [demo.object_masks[i, 0, np.clip(np.round(f.y), 0, s - 1).astype(int),
                            np.clip(np.round(f.x), 0, s - 1).astype(int)].float().mean() for i, f in enumerate(demo.fixations)]
    assert 0.55 < float(torch.stack(on).mean()) < 0.95  # most fixations on the object, not all
    # the premise: bottom-up saliency puts less of its mass on the object than the observers do
    # (at 224 px: about 17 % against 61 %; tiny 64-px images make the object more salient)
    assert demo.meta["bottom_up_mass_on_object"] < 0.8 * float(gaze_on_object.mean())


def test_classes_differ_in_shape(demo):
    # mean mask of each class, in the object's own frame, differs: compare mask fill of the bounding box
    fill = {}
    for c in range(len(CLASS_NAMES)):
        sel = demo.labels == c
        if sel.any():
            m = demo.object_masks[sel, 0]
            rows, cols = m.any(dim=2).sum(dim=1).float(), m.any(dim=1).sum(dim=1).float()
            fill[c] = float((m.sum(dim=(1, 2)) / (rows * cols)).mean())
    assert len(fill) >= 4 and max(fill.values()) - min(fill.values()) > 0.2


def test_colour_family_is_shared_by_two_classes(demo):
    # the object's mean colour: its hue family is the class's, shared by exactly two classes
    m = demo.object_masks.float()
    rgb = (demo.images * m).sum((2, 3)) / m.sum((2, 3))
    dominant = rgb.argmax(1)  # red, green, blue families = channels 0, 1, 2
    family = torch.tensor([round(3 * CLASS_HUES[c]) % 3 for c in demo.labels.tolist()])
    assert float((dominant == family).float().mean()) > 0.9
    assert sorted(round(3 * h) % 3 for h in CLASS_HUES) == [0, 0, 1, 1, 2, 2]


def test_a_small_set_looks_like_a_large_one_downsampled():
    # anti-aliased objects, area-resampled photographs: a 64-px draw is the 224-px draw shrunk (same seed, same
    # scenes), so a network trained on small images can be run on resized large ones
    small, large = make_demo(n=16, size=64, seed=3), make_demo(n=16, size=224, seed=3)
    assert torch.equal(small.labels, large.labels)
    shrunk = F.interpolate(large.images, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
    assert float((shrunk - small.images).abs().mean()) < 0.03
    aliased = F.interpolate(large.images, size=(64, 64), mode="nearest")
    assert float((shrunk - small.images).abs().mean()) < 0.5 * float((aliased - small.images).abs().mean())


def test_bad_arguments():
    with pytest.raises(ValueError, match="n must be"):
        make_demo(n=0)
    with pytest.raises(ValueError, match="size must be"):
        make_demo(n=2, size=16)
    with pytest.raises(ValueError, match="seed must be"):
        make_demo(n=2, seed=1.5)
