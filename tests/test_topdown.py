"""The top-down attention module (TdAttenMix / AbSViT feedback), its providers and gaze as the top-down signal."""

from __future__ import annotations

import copy
import warnings

import pytest
import timm
import torch

from gazemix.attention.topdown import (TopDownViT, blend_maps, class_similarity_map, gaze_topdown, threshold_map,
                                       topdown_attention)
from gazemix.contract import MixerInputError
from tests.conftest import needs_cuda

KW = dict(img_size=32, patch_size=8, depth=2, num_classes=5)


_BASE: list[TopDownViT] = []


def make(**kw) -> TopDownViT:
    """A fresh copy of one random-initialised tiny module (building a timm model is the slow part)."""
    if not _BASE:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _BASE.append(TopDownViT("vit_tiny_patch16_224", **KW))
    td = copy.deepcopy(_BASE[0])
    for key, value in kw.items():
        setattr(td, key, value)
    return td


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 3, 4])


def test_random_init_warns_and_nothing_trains():
    with pytest.warns(UserWarning, match="random weights"):
        td = TopDownViT("vit_tiny_patch16_224", **KW)
    assert not td.training and not any(p.requires_grad for p in td.parameters())
    assert len(td.decoders) == 2


def test_map_shape_range_and_threshold(batch):
    x, y = batch
    a = make()(x, y)
    assert a.shape == (3, 4, 4) and bool((a >= 0).all())
    # after the 0.7/0.3 threshold at most 30 % of each map's range remains, and its minimum is 0
    raw = make(threshold=None)(x, y)
    rng = raw.flatten(1).max(1).values - raw.flatten(1).min(1).values
    torch.testing.assert_close(a.flatten(1).max(1).values, 0.3 * rng)
    assert float(a.flatten(1).min(1).values.max()) == 0.0


def test_threshold_map_hand_values():
    s = torch.tensor([[[0.0, 1.0], [0.5, 0.9]]])
    torch.testing.assert_close(threshold_map(s), torch.tensor([[[0.0, 0.3], [0.0, 0.2]]]))
    assert torch.equal(threshold_map(s, None), s)


def test_first_pass_is_the_timm_forward_and_zero_feedback_is_value_bias_only(batch):
    x, _ = batch
    td = make()
    torch.testing.assert_close(td.features(x), td.vit.forward_features(x))
    for blk in td.vit.blocks:  # with no value bias, a zero top-down signal leaves the second pass unchanged
        blk.attn.qkv.bias.data.zero_()
    zeros = [torch.zeros(3, 17, 192)] * 2
    torch.testing.assert_close(td.features(x, zeros), td.vit.forward_features(x))


def test_tau_zero_ignores_decoders_and_tau_one_uses_them(batch):
    x, y = batch
    td = make(tau=0.0)
    before = td(x, y)
    for p in td.decoders.parameters():
        p.data.normal_(generator=torch.Generator().manual_seed(5))
    assert torch.equal(td(x, y), before)  # no top-down signal at tau = 0
    td.tau = 1.0
    assert not torch.equal(td(x, y), before)


def test_map_is_label_conditioned(batch):
    x, _ = batch
    td = make()
    a0, a1 = td(x, torch.zeros(3, dtype=torch.long)), td(x, torch.ones(3, dtype=torch.long))
    assert not torch.equal(a0, a1)
    soft = torch.nn.functional.one_hot(torch.tensor([1, 1, 1]), 5).float()
    torch.testing.assert_close(td(x, soft), a1)  # soft labels weight the class vectors


def test_class_weights_override_the_head(batch):
    x, _ = batch
    cw = torch.randn(7, 192, generator=torch.Generator().manual_seed(3))
    td = make(class_weights=cw)
    assert td(x, torch.tensor([6, 6, 6])).shape == (3, 4, 4)  # label 6 exists only in class_weights
    with pytest.raises(MixerInputError, match="class_weights"):
        make()(x, torch.tensor([6, 6, 6]))


def test_checkpoint_round_trip_with_absvit_key_names(batch, tmp_path):
    x, y = batch
    td = make()
    absvit = {k.removeprefix("vit."): v for k, v in td.state_dict().items()}
    absvit["prompt"] = torch.zeros(192)  # AbSViT's learned prompt is ignored
    path = tmp_path / "absvit.pth"
    torch.save({"model": absvit}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no random-init warning with weights
        torch.manual_seed(9)
        loaded = TopDownViT("vit_tiny_patch16_224", checkpoint=path, **KW)
    assert torch.equal(loaded(x, y), td(x, y))
    torch.save({"model": {"blocks.0.nonsense": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="do not fit"):
        TopDownViT("vit_tiny_patch16_224", checkpoint=tmp_path / "bad.pth", **KW)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TopDownViT("vit_tiny_patch16_224", checkpoint=tmp_path / "missing.pth", **KW)


def test_trained_model_as_provider_restores_mode(batch):
    x, y = batch
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **KW).train()
    a = topdown_attention(model, x, y)
    assert model.training and a.shape == (3, 4, 4)
    torch.testing.assert_close(a, class_similarity_map(model, x, y))
    assert topdown_attention(lambda im, lab: torch.ones(3, 2, 2), x, y).shape == (3, 2, 2)
    with pytest.raises(MixerInputError, match="expected"):
        topdown_attention(lambda im, lab: torch.ones(2, 2), x, y)


def test_gaze_topdown_and_blend():
    g = torch.zeros(2, 1, 32, 32)
    g[:, :, 8:16, 8:24] = 1.0
    m = gaze_topdown(g, (4, 4))
    expected = torch.zeros(4, 4)
    expected[1, 1:3] = 0.3 * 64  # token mass 64, kept above 0.7 max + 0.3 min
    torch.testing.assert_close(m[0], expected)
    other = torch.rand(2, 4, 4)
    assert torch.equal(blend_maps(other, m, 0.0), other) and torch.equal(blend_maps(other, m, 1.0), m)
    mid = blend_maps(other, m, 0.5)
    torch.testing.assert_close(mid.sum(dim=(1, 2)), torch.ones(2))
    with pytest.raises(MixerInputError, match="non-negative"):
        gaze_topdown(-g, (4, 4))
    with pytest.raises(MixerInputError, match="differ in shape"):
        blend_maps(other, torch.rand(2, 2, 2), 0.5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="tau"):
        TopDownViT("vit_tiny_patch16_224", tau=-1.0, **KW)
    with pytest.raises(ValueError, match="threshold"):
        TopDownViT("vit_tiny_patch16_224", threshold=2.0, **KW)
    with pytest.raises(ValueError, match="class_weights"):
        TopDownViT("vit_tiny_patch16_224", class_weights=torch.ones(3, 5), **KW)
    with pytest.raises(ValueError, match="VisionTransformer"):
        TopDownViT(torch.nn.Linear(2, 2))


@needs_cuda
def test_topdown_on_cuda(batch):
    x, y = batch
    td = make().cuda()
    assert td(x.cuda(), y.cuda()).is_cuda
