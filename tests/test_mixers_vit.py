"""Attention/ViT mixers (issue 6): TdAttenMix, GazeMix, SMMix, TransMix, MixPro, TokenMix, TL-Align.

Contract properties for each, plus the method-specific rules (spec mixers.md §5.1 R17-R21, tdattenmix.md §2).
"""

from __future__ import annotations

import math
import warnings

import pytest
import timm
import torch

from gazemix import create_mixer
from gazemix.attention.topdown import TopDownViT
from gazemix.attention.vit import AttentionHook, class_token_attention
from gazemix.contract import MixerInputError
from gazemix.mixers.smmix import consistency_loss, fine_grained_loss, region_token_means, window_extrema
from gazemix.mixers.tdattenmix import attention_ratio
from gazemix.mixers.tlalign import TokenLabelAligner, align_step
from gazemix.mixers.tokenmix import block_token_masks, random_token_masks
from tests.conftest import SHARED, needs_cuda, needs_shared

GEN = torch.Generator().manual_seed(0)


def grid_of(x: torch.Tensor, patch: int = 8) -> tuple[int, int]:
    return max(1, x.shape[-2] // patch), max(1, x.shape[-1] // patch)


def ctx_topdown(x, y):
    return {"topdown": torch.rand(x.shape[0], *grid_of(x), generator=GEN)}


def ctx_gaze(x, y):
    return {"gaze": torch.rand(x.shape[0], 1, *x.shape[-2:], generator=GEN)}


def ctx_attention(x, y):
    return {"attention": torch.rand(x.shape[0], *grid_of(x), generator=GEN)}


def ctx_label_maps(x, y):
    return {"label_maps": torch.rand(x.shape[0], *grid_of(x), generator=GEN)}


# name -> (options, context factory); square/token branches forced on so the interesting path is tested
CASES = {
    "tdattenmix": ({"switch_prob": 1.0}, ctx_topdown),
    "tdattenmix_official": ({"switch_prob": 1.0, "ratio_mode": "official"}, ctx_topdown),
    "tdattenmix_mixup": ({"switch_prob": 0.0}, ctx_topdown),
    "gazemix": ({"patch_size": 8}, ctx_gaze),
    "smmix": ({"switch_prob": 1.0}, ctx_attention),
    "transmix": ({"switch_prob": 1.0}, lambda x, y: {}),
    "transmix_mixup": ({"switch_prob": 0.0}, lambda x, y: {}),
    "mixpro": ({"maskmix_prob": 1.0, "patch_size": 8, "mask_patch_size": 16}, lambda x, y: {}),
    "mixpro_switch": ({"maskmix_prob": 0.0, "patch_size": 8, "mask_patch_size": 16}, lambda x, y: {}),
    "tokenmix": ({"switch_prob": 1.0, "patch_size": 8}, ctx_label_maps),
    "tokenmix_random": ({"switch_prob": 1.0, "patch_size": 8, "mask_type": "random"}, ctx_label_maps),
    "tlalign": ({"patch_size": 8}, lambda x, y: {}),
}
TARGETS_SUM_TO_ONE = {k for k in CASES if not k.startswith("tokenmix")}


def mixer_of(case: str, **extra):
    opts, _ = CASES[case]
    return create_mixer(case.split("_")[0], num_classes=8, seed=3, **opts, **extra)


def run(case: str, x: torch.Tensor, y: torch.Tensor, **extra):
    return mixer_of(case, **extra)(x, y, **CASES[case][1](x, y))


def constant_batch(b: int, h: int = 32, w: int = 32) -> torch.Tensor:
    return (torch.arange(b, dtype=torch.float32) + 1).view(b, 1, 1, 1).expand(b, 3, h, w).clone()


# ------------------------------------------------------------------------------------------ contract
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("hw", [(32, 32), (33, 45)])
def test_shapes_targets_lam(case, hw):
    b = 6
    x, y = torch.rand(b, 3, *hw, generator=GEN), torch.arange(b)
    r = run(case, x, y)
    assert r.images.shape == x.shape and r.images.dtype == x.dtype
    assert r.targets.shape == (b, 8) and r.lam.shape == (b,) and r.mask.shape == (b, 1, *hw)
    assert bool(((r.lam >= 0) & (r.lam <= 1)).all()) and bool(((r.partner_lam >= 0) & (r.partner_lam <= 1)).all())
    if case in TARGETS_SUM_TO_ONE:
        torch.testing.assert_close(r.targets.sum(1), torch.ones(b))
    assert r.mixer == case.split("_")[0]


@pytest.mark.parametrize("case", CASES)
def test_constant_images_reveal_the_mask_and_replay_ones(case):
    b = 5
    x = constant_batch(b)
    r = run(case, x, torch.arange(b))
    ones = torch.ones(b, 1, 32, 32)
    value = torch.arange(b, dtype=torch.float32) + 1
    expected = sum(s.share.expand(b, 1, 32, 32)[:, 0] * (s.warp.apply(ones)[:, 0] if s.warp else 1.0)
                   * value[s.index].view(-1, 1, 1) for s in r.sources)
    torch.testing.assert_close(r.images[:, 0], expected)
    own, partner = r.replay(ones)
    torch.testing.assert_close(own, r.mask.sum(dim=(1, 2, 3)))
    torch.testing.assert_close(partner, (1 - r.mask).sum(dim=(1, 2, 3)))


@pytest.mark.parametrize("case", CASES)
def test_determinism_inputs_untouched_and_batch_of_one(case):
    x, y = torch.rand(4, 3, 32, 32, generator=GEN), torch.arange(4)
    context = CASES[case][1](x, y)
    x0, y0 = x.clone(), y.clone()
    first = mixer_of(case)(x, y, **context)
    second = mixer_of(case)(x, y, **context)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert torch.equal(first.images, second.images) and torch.equal(first.targets, second.targets)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    m = mixer_of(case)
    assert torch.equal(m(x, y, generator=g1, **context).images, m(x, y, generator=g2, **context).images)
    one = run(case, x[:1], y[:1])
    assert one.images.shape == (1, 3, 32, 32) and int(one.index) == 0


@pytest.mark.parametrize("case", CASES)
def test_caller_fixed_partners_are_used(case):
    x, y = torch.rand(4, 3, 32, 32, generator=GEN), torch.arange(4)
    index = torch.tensor([2, 0, 3, 1])
    r = mixer_of(case)(x, y, index=index, **CASES[case][1](x, y))
    assert torch.equal(r.index.cpu(), index)
    with pytest.raises(MixerInputError, match="index="):
        mixer_of(case)(x, y, index=torch.tensor([0, 1]), **CASES[case][1](x, y))


def test_relabel_is_identity_for_plain_mixers_and_required_for_two_phase_ones():
    x, y = torch.rand(4, 3, 32, 32, generator=GEN), torch.arange(4)
    r = run("smmix", x, y)
    assert mixer_of("smmix").relabel(r) is r
    for case in ("transmix", "mixpro"):
        m = mixer_of(case)
        assert m.relabels_after_forward and not m.content_independent
        with pytest.raises(MixerInputError, match="attention="):
            m.relabel(m(x, y))


@pytest.mark.parametrize("name,kwargs,match", [
    ("tdattenmix", {"ratio_mode": "pooled"}, "ratio_mode"), ("tdattenmix", {"balance": 2.0}, "balance"),
    ("tdattenmix", {"switch_prob": -0.1}, "switch_prob"), ("tdattenmix", {"max_side_ratio": 0.1}, "max_side_ratio"),
    ("gazemix", {"balance": 0.5}, "balance"), ("smmix", {"pairing": "zip"}, "pairing"),
    ("transmix", {"area_weight": 1.5}, "area_weight"), ("mixpro", {"mask_patch_size": 20}, "multiple of patch_size"),
    ("tokenmix", {"mask_type": "grid"}, "mask_type"), ("tokenmix", {"extra_tokens": -1}, "extra_tokens"),
    ("tlalign", {"patch_size": 0}, "patch_size")])
def test_bad_options(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_mixer(name, **kwargs)


def test_missing_context_says_what_to_pass():
    x, y = torch.rand(2, 3, 32, 32), torch.arange(2)
    with pytest.raises(MixerInputError, match="model="):
        create_mixer("tdattenmix", num_classes=2)(x, y)
    with pytest.raises(MixerInputError, match="attention="):
        create_mixer("tdattenmix", num_classes=2, balance=0.5)(x, y, topdown=torch.rand(2, 4, 4))
    with pytest.raises(MixerInputError, match="gaze="):
        create_mixer("gazemix", num_classes=2)(x, y)
    with pytest.raises(MixerInputError, match=r"gaze= must be \(2, 1, 32, 32\)"):
        create_mixer("gazemix", num_classes=2)(x, y, gaze=torch.rand(2, 1, 16, 16))
    with pytest.raises(MixerInputError, match="attention= or model="):
        create_mixer("smmix", num_classes=2)(x, y)
    with pytest.raises(MixerInputError, match="label_maps="):
        create_mixer("tokenmix", num_classes=2)(x, y)
    with pytest.raises(MixerInputError, match="num_classes"):
        create_mixer("tlalign")(x, y)


# ------------------------------------------------------------------------------------ TdAttenMix/GazeMix
def test_window_extrema_ties_go_to_the_first_window():
    maps = torch.zeros(1, 4, 4)
    maps[0, 2:, 2:] = 1.0
    lo, hi = window_extrema(maps, 2)
    assert lo.tolist() == [[0, 0]] and hi.tolist() == [[2, 2]]


def test_square_side_and_area_label_on_the_official_grid():
    """R20: 14 x 14 tokens at 224 px, s in {3..10}, lam_area = (196 - s^2) / 196."""
    x, y = torch.rand(2, 3, 224, 224, generator=GEN), torch.arange(2)
    sides = set()
    for seed in range(30):
        r = create_mixer("smmix", num_classes=2, seed=seed, switch_prob=1.0)(x, y, attention=torch.rand(2, 196))
        s = r.params["side"]
        sides.add(s)
        torch.testing.assert_close(r.lam, torch.full((2,), (196 - s * s) / 196))
        torch.testing.assert_close(r.mask.mean(dim=(1, 2, 3)), r.lam)
    assert sides <= set(range(3, 11)) and len(sides) > 4


def test_pasted_square_is_the_partner_max_and_replaced_square_the_own_min():
    x, y = torch.rand(4, 3, 32, 32, generator=GEN), torch.arange(4)
    maps = torch.rand(4, 4, 4, generator=GEN)
    r = create_mixer("tdattenmix", num_classes=4, seed=0, switch_prob=1.0)(x, y, topdown=maps)
    lo, hi = window_extrema(maps, r.params["side"])
    assert torch.equal(r.params["own_pos"], lo) and torch.equal(r.params["src_pos"], hi[r.index])
    s = r.params["side"] * 8
    for i in range(4):  # pixels of the own square are the partner's square, translated
        (oy, ox), (py, px) = (lo[i] * 8).tolist(), (hi[r.index[i]] * 8).tolist()
        assert torch.equal(r.images[i, :, oy:oy + s, ox:ox + s], x[r.index[i], :, py:py + s, px:px + s])


def test_label_is_half_area_half_attention_per_sample_and_official():
    maps = torch.tensor([[[0.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, 0.0]]])
    own_sq = torch.tensor([[[True, False], [False, False]], [[False, False], [False, True]]])
    src_sq = torch.tensor([[[True, False], [False, False]], [[False, False], [False, True]]])
    index, lam_area = torch.tensor([1, 0]), torch.tensor([0.75, 0.75])
    # per sample: T = own mass outside own square, S = partner's mass on its pasted square
    per = attention_ratio(maps, index, own_sq, src_sq, lam_area, "per_sample")
    torch.testing.assert_close(per, torch.tensor([1.0 / (1.0 + 2.0), 2.0 / (2.0 + 1.0)]))
    # official: pooled T = 1 + 2, S read from the OWN maps at the partner-square coordinates = 0 + 0
    off = attention_ratio(maps, index, own_sq, src_sq, lam_area, "official")
    torch.testing.assert_close(off, torch.ones(2))
    x, y = torch.rand(2, 3, 16, 16, generator=GEN), torch.arange(2)
    r = create_mixer("tdattenmix", num_classes=2, seed=0, switch_prob=1.0)(x, y, topdown=torch.rand(2, 2, 2))
    torch.testing.assert_close(r.lam, 0.5 * r.params["lam_area"] + 0.5 * r.params["lam_attn"])


def test_all_zero_maps_fall_back_to_the_area_label():
    x, y = torch.rand(4, 3, 32, 32, generator=GEN), torch.arange(4)
    for mode in ("per_sample", "official"):
        r = create_mixer("tdattenmix", num_classes=4, seed=0, switch_prob=1.0, ratio_mode=mode)(
            x, y, topdown=torch.zeros(4, 4, 4))
        assert torch.isfinite(r.targets).all()
        torch.testing.assert_close(r.lam, r.params["lam_area"])
        assert r.params["own_pos"].tolist() == [[0, 0]] * 4  # ties go to the top-left window


def test_balance_zero_is_attention_only_and_one_is_class_driven():
    """The selection follows the bottom-up attention at balance 0 and the label's top-down map at balance 1."""
    b, x = 4, torch.rand(4, 3, 32, 32, generator=GEN)
    y = torch.tensor([0, 5, 10, 15])  # class c peaks at token (c // 4, c % 4) in the top-down provider

    def provider(images, labels):
        maps = torch.zeros(images.shape[0], 16)
        maps[torch.arange(images.shape[0]), labels] = 1.0
        return maps.view(-1, 4, 4)

    attention = torch.zeros(b, 4, 4)
    attention[:, 3, 0] = 1.0  # the model looks at the bottom-left token of every image
    opts = dict(num_classes=16, seed=0, switch_prob=1.0, min_side_ratio=0.25, max_side_ratio=0.25)  # s = 1
    bottom_up = create_mixer("tdattenmix", balance=0.0, **opts)(x, y, model=provider, attention=attention)
    assert bottom_up.params["src_pos"].tolist() == [[3, 0]] * b
    top_down = create_mixer("tdattenmix", balance=1.0, **opts)(x, y, model=provider, attention=attention)
    partner_labels = y[top_down.index]
    assert top_down.params["src_pos"].tolist() == [[int(c) // 4, int(c) % 4] for c in partner_labels]
    mid = create_mixer("tdattenmix", balance=0.5, **opts)(x, y, model=provider, attention=attention)
    assert mid.params["maps"].flatten(1).sum(1).allclose(torch.ones(b))  # blended unit-mass maps


def test_tdattenmix_with_the_topdown_vit_and_the_consistency_loss():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        td = TopDownViT("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=4)
    x, y = torch.rand(4, 3, 32, 32, generator=GEN), torch.arange(4)
    clean = torch.randn(4, 4, generator=GEN)
    r = create_mixer("tdattenmix", num_classes=4, seed=0, switch_prob=1.0)(x, y, model=td, logits=clean)
    torch.testing.assert_close(r.params["maps"], td(x, y))
    z = torch.randn(4, 4, generator=GEN)
    lam = r.lam.view(-1, 1)
    q = torch.softmax(lam * clean + (1 - lam) * clean[r.index], -1)
    expected = (q * (q.log() - torch.log_softmax(z, -1))).sum(-1).mean()
    torch.testing.assert_close(consistency_loss(z, r), expected)
    mixup = create_mixer("tdattenmix", num_classes=4, seed=0, switch_prob=0.0)(x, y, model=td)
    assert float(consistency_loss(z, mixup)) == 0.0


def test_gaze_blends_with_the_model_map():
    x, y = torch.rand(2, 3, 32, 32, generator=GEN), torch.arange(2)
    gaze = torch.zeros(2, 1, 32, 32)
    gaze[:, :, 24:, 24:] = 1.0
    topdown = torch.zeros(2, 4, 4)
    topdown[:, 0, 0] = 1.0
    opts = dict(num_classes=2, seed=0, switch_prob=1.0, min_side_ratio=0.25, max_side_ratio=0.25)
    only_gaze = create_mixer("tdattenmix", gaze_weight=1.0, **opts)(x, y, topdown=topdown, gaze=gaze)
    assert only_gaze.params["src_pos"].tolist() == [[3, 3]] * 2
    default = create_mixer("tdattenmix", **opts)(x, y, topdown=topdown, gaze=gaze)  # official: gaze unused
    assert default.params["src_pos"].tolist() == [[0, 0]] * 2
    blend = create_mixer("tdattenmix", gaze_weight=0.5, **opts)(x, y, topdown=topdown, gaze=gaze)
    assert blend.params["maps"][0, 0, 0] > 0 and blend.params["maps"][0, 3, 3] > 0
    with pytest.raises(MixerInputError, match="gaze_weight > 0"):
        create_mixer("tdattenmix", **opts)(x, y, gaze=gaze)


def test_gazemix_pastes_the_looked_at_box_and_labels_by_gaze():
    b = 4
    x, y = torch.rand(b, 3, 64, 64, generator=GEN), torch.arange(b)
    gaze = torch.zeros(b, 1, 64, 64)
    for i in range(b):  # each image is looked at inside one 2 x 2-token box (32 x 32 px) at its own place
        gaze[i, :, 16 * (i % 3):16 * (i % 3) + 32, 16 * (i % 2):16 * (i % 2) + 32] = 1.0
    r = create_mixer("gazemix", num_classes=b, seed=0, min_side_ratio=0.5, max_side_ratio=0.5)(x, y, gaze=gaze)
    for i in range(b):
        j = int(r.index[i])
        assert r.params["src_boxes"][i].tolist() == [16 * (j % 3), 16 * (j % 2), 16 * (j % 3) + 32, 16 * (j % 2) + 32]
    own, partner = r.replay(gaze)
    torch.testing.assert_close(partner, gaze[r.index].sum(dim=(1, 2, 3)))  # the whole looked-at box is pasted
    torch.testing.assert_close(r.params["lam_attn"], own / (own + partner))
    torch.testing.assert_close(r.lam, 0.5 * r.params["lam_area"] + 0.5 * own / (own + partner))


# ----------------------------------------------------------------------------------------------- SMMix
def test_smmix_with_a_model_runs_the_eval_forward_and_exposes_the_losses():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=1,
                              num_classes=4).train()
    x, y = torch.rand(4, 3, 32, 32, generator=GEN), torch.arange(4)
    r = create_mixer("smmix", num_classes=4, seed=0, switch_prob=1.0)(x, y, model=model)
    assert model.training and r.params["clean_logits"].shape == (4, 4)
    tokens = model.forward_features(r.images)
    own, pasted = region_token_means(tokens, r)
    n_pasted = r.params["side"] ** 2
    patches = tokens[:, 1:].reshape(4, 4, 4, -1)
    rr, cc = r.params["own_pos"][0].tolist()
    s = r.params["side"]
    torch.testing.assert_close(pasted[0], patches[0, rr:rr + s, cc:cc + s].reshape(n_pasted, -1).mean(0))
    loss = fine_grained_loss(model.head(own), model.head(pasted), r)
    assert loss.ndim == 0 and loss.requires_grad


# ----------------------------------------------------------------------------------------------- TransMix
def test_transmix_label_is_the_attention_mass_of_the_pasted_patches():
    b, x, y = 4, torch.rand(4, 3, 32, 32, generator=GEN), torch.arange(4)
    attention = torch.rand(b, 16, generator=GEN)
    for area_weight in (0.0, 0.5):
        m = create_mixer("transmix", num_classes=b, seed=1, switch_prob=1.0, area_weight=area_weight)
        r = m(x, y)
        y1, x1, y2, x2 = r.params["boxes"][0].tolist()
        tops = torch.arange(4) * 8  # a token is pasted when its top-left pixel lies in the box
        inside = ((tops >= y1) & (tops < y2)).view(4, 1) & ((tops >= x1) & (tops < x2)).view(1, 4)
        a = attention.view(b, 4, 4)
        lam_attn = (a * inside).flatten(1).sum(1) / a.flatten(1).sum(1)
        area = (y2 - y1) * (x2 - x1) / 1024
        r2 = m.relabel(r, attention=attention)
        torch.testing.assert_close(r2.partner_lam, area_weight * area + (1 - area_weight) * lam_attn)
        torch.testing.assert_close(r2.targets.sum(1), torch.ones(b))
        assert torch.equal(r2.images, r.images)


def test_transmix_uniform_attention_gives_the_token_fraction_and_mixup_is_untouched():
    x, y = torch.rand(3, 3, 32, 32, generator=GEN), torch.arange(3)
    m = create_mixer("transmix", num_classes=3, seed=2, switch_prob=1.0)
    r = m(x, y)
    pasted_tokens = (1 - r.mask[:, :, ::8, ::8]).mean(dim=(1, 2, 3))
    torch.testing.assert_close(m.relabel(r, attention=torch.ones(3, 4, 4)).partner_lam, pasted_tokens)
    mix = create_mixer("transmix", num_classes=3, seed=2, switch_prob=0.0)
    r = mix(x, y)
    torch.testing.assert_close(mix.relabel(r, attention=torch.rand(3, 16)).lam, r.lam)


def test_transmix_with_a_real_forward():
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32, patch_size=8,
                              depth=1, num_classes=3)
    m = create_mixer("transmix", num_classes=3, seed=0, switch_prob=1.0)
    r = m(torch.rand(3, 3, 32, 32, generator=GEN), torch.arange(3))
    logits, attention = class_token_attention(model, r.images)
    assert m.relabel(r, attention=attention).params["relabelled"]


# ----------------------------------------------------------------------------------------------- MixPro
def test_mixpro_cells_are_whole_patches_and_count_follows_the_ratio():
    x, y = torch.rand(4, 3, 64, 64, generator=GEN), torch.arange(4)
    for seed in range(5):
        r = create_mixer("mixpro", num_classes=4, seed=seed, maskmix_prob=1.0, patch_size=8, mask_patch_size=16)(x, y)
        m = r.mask[:, 0]
        patches = m.view(4, 8, 8, 8, 8)  # (B, rows, 8 px, cols, 8 px)
        assert torch.equal(patches, patches[:, :, :1, :, :1].expand_as(patches))  # constant on every patch
        assert torch.equal(m, m[:, ::16, ::16].repeat_interleave(16, 1).repeat_interleave(16, 2))  # 16-px cells
        count = math.ceil(16 * r.params["ratio"])
        assert (m[:, ::16, ::16].sum(dim=(1, 2)) == count).all()
        torch.testing.assert_close(r.lam, torch.full((4,), count / 16))


def test_mixpro_pal():
    x, y = torch.rand(4, 3, 32, 32, generator=GEN), torch.arange(4)
    m = create_mixer("mixpro", num_classes=4, seed=0, maskmix_prob=1.0, patch_size=8, mask_patch_size=16)
    r = m(x, y)
    attention = torch.rand(4, 16, generator=GEN)
    own_tok = r.mask[:, 0, ::8, ::8].flatten(1)
    lam_attn = (own_tok * attention).sum(1) / attention.sum(1)
    confident = torch.log(r.targets + 1e-12) * 100  # softmax == targets -> sim = 1 -> the attention label
    torch.testing.assert_close(m.relabel(r, attention=attention, logits=confident).lam, lam_attn, atol=1e-4, rtol=0)
    orth = torch.full((4, 4), -1e4)
    orth[torch.arange(4), (torch.arange(4) + 1) % 4] = 0  # predicts a class in neither target -> sim ~ 0 unless pair
    r_orth = m.relabel(r, attention=attention, logits=orth)
    sim = r_orth.params["pal_sim"]
    torch.testing.assert_close(r_orth.lam, sim * lam_attn + (1 - sim) * r.lam)
    off = create_mixer("mixpro", num_classes=4, seed=0, maskmix_prob=1.0, patch_size=8, mask_patch_size=16, pal=False)
    assert off.relabel(r, attention=attention, logits=orth) is r


# ----------------------------------------------------------------------------------------------- TokenMix
def test_tokenmix_token_counts_on_the_official_grid():
    """R18: lam 0.5 + 14 extra tokens -> exactly 112 random partner tokens of 196; block masks at most 112."""
    g = torch.Generator().manual_seed(0)
    assert (random_token_masks(8, (14, 14), 112, g).flatten(1).sum(1) == 112).all()
    block = block_token_masks(64, (14, 14), 112, g).flatten(1).sum(1)
    assert (block <= 112).all() and (block > 0).all()
    x, y = torch.rand(2, 3, 224, 224, generator=GEN), torch.arange(2)
    r = create_mixer("tokenmix", num_classes=2, seed=0, switch_prob=1.0, mask_type="random", lam_constant=0.5,
                     extra_tokens=14, teacher_labels=False)(x, y)
    torch.testing.assert_close(r.lam, torch.full((2,), 84 / 196))


def test_tokenmix_constant_teacher_reduces_to_area_labels():
    x, y = torch.rand(4, 3, 32, 32, generator=GEN), torch.arange(4)
    opts = dict(num_classes=4, seed=0, switch_prob=1.0, patch_size=8)
    r = create_mixer("tokenmix", **opts)(x, y, label_maps=torch.full((4, 4, 4), 3.0))
    area = r.mask.mean(dim=(1, 2, 3))
    torch.testing.assert_close(r.lam, area)
    torch.testing.assert_close(r.partner_lam, 1 - area)
    torch.testing.assert_close(r.targets.sum(1), torch.ones(4))
    torch.manual_seed(0)
    teacher = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=1,
                                num_classes=4)
    torch.nn.init.zeros_(teacher.head.weight)
    torch.nn.init.zeros_(teacher.head.bias)  # a teacher that sees nothing: constant maps
    rt = create_mixer("tokenmix", **opts)(x, y, model=teacher)
    torch.testing.assert_close(rt.lam, rt.mask.mean(dim=(1, 2, 3)))


def test_tokenmix_teacher_weights_are_not_renormalised():
    x, y = torch.rand(2, 3, 32, 32, generator=GEN), torch.arange(2)
    maps = torch.zeros(2, 4, 4)
    maps[:, 0, 0] = 1.0  # each image's object is the top-left token
    r = create_mixer("tokenmix", num_classes=2, seed=0, switch_prob=1.0, patch_size=8)(x, y, label_maps=maps)
    pasted = r.params["pasted_tokens"]
    torch.testing.assert_close(r.lam, (~pasted[:, 0, 0]).float())
    torch.testing.assert_close(r.partner_lam, pasted[:, 0, 0].float())
    resnet = timm.create_model("resnet10t", pretrained=False, num_classes=2)
    cam = create_mixer("tokenmix", num_classes=2, seed=0, switch_prob=1.0, patch_size=8)(x, y, model=resnet)
    assert cam.lam.shape == (2,) and bool(((cam.lam <= 1 + 1e-6) & (cam.partner_lam <= 1 + 1e-6)).all())


# ----------------------------------------------------------------------------------------------- TL-Align
def test_align_step_identity_and_uniform_attention():
    """R21: identity attention keeps labels; uniform attention halves each token's distance to the mean."""
    labels = torch.rand(2, 5, 3, generator=GEN)
    eye = torch.eye(5).expand(2, 4, 5, 5)
    torch.testing.assert_close(align_step(labels, eye), labels)
    uniform = torch.full((2, 4, 5, 5), 0.2)
    mean = labels.mean(1, keepdim=True)
    out = labels
    for d in range(1, 4):
        out = align_step(out, uniform)
        torch.testing.assert_close(out.mean(1, keepdim=True), mean)
        torch.testing.assert_close(out[:, 0], (mean + (labels[:, :1] - mean) / 2 ** d)[:, 0])


def test_tlalign_box_on_whole_patches_and_aligner():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                              num_classes=4)
    x, y = torch.rand(4, 3, 32, 32, generator=GEN), torch.arange(4)
    r = create_mixer("tlalign", num_classes=4, seed=5, patch_size=8)(x, y)
    m = r.mask[:, 0].view(4, 4, 8, 4, 8)
    assert torch.equal(m, m[:, :, :1, :, :1].expand_as(m))
    torch.testing.assert_close(r.lam, r.mask[:, 0, ::8, ::8].mean(dim=(1, 2)))
    logits, aligned = TokenLabelAligner(model)(r)
    assert logits.shape == (4, 4) and logits.requires_grad
    torch.testing.assert_close(aligned.sum(1), torch.ones(4))
    with AttentionHook(model, blocks=(0, 1)) as hook:  # full K-class token labels, propagated by hand
        model(r.images)
    soft = r.params["soft"]
    own_tok = r.mask[:, 0, ::8, ::8].flatten(1).unsqueeze(-1)
    patch_labels = own_tok * soft.unsqueeze(1) + (1 - own_tok) * soft[r.index].unsqueeze(1)
    full = torch.cat([r.targets.unsqueeze(1), patch_labels], 1)
    for block in (0, 1):
        full = align_step(full, hook.matrix(block))
    torch.testing.assert_close(aligned, full[:, 0])
    with TokenLabelAligner(model).track(r) as labels:
        model(r.images)
    torch.testing.assert_close(labels.targets, aligned)
    same = create_mixer("tlalign", num_classes=4, seed=5, patch_size=8)(x, torch.zeros(4, dtype=torch.long))
    _, aligned_same = TokenLabelAligner(model)(same)  # own and partner share the class: the label is that class
    torch.testing.assert_close(aligned_same, torch.nn.functional.one_hot(torch.zeros(4, dtype=torch.long), 4).float())


# ----------------------------------------------------------------------------------------------- CUDA
@needs_cuda
@pytest.mark.parametrize("case", CASES)
def test_on_cuda(case):
    x, y = torch.rand(4, 3, 32, 32).cuda(), torch.arange(4).cuda()
    context = {k: v.cuda() for k, v in CASES[case][1](x.cpu(), y.cpu()).items()}
    r = mixer_of(case)(x, y, **context)
    assert r.images.is_cuda and r.targets.is_cuda and r.lam.is_cuda
    own, partner = r.replay(torch.ones(4, 1, 32, 32).cuda())
    torch.testing.assert_close(own + partner, torch.full((4,), 1024.0, device="cuda"))
    if case.startswith(("transmix", "mixpro")):
        m = mixer_of(case)
        out = m.relabel(r, attention=torch.rand(4, 16).cuda(), logits=torch.randn(4, 8).cuda())
        assert out.targets.is_cuda


# ----------------------------------------------------------------------------------------------- real gaze
@needs_shared
def test_gazemix_on_real_cub_gha_gaze_pastes_looked_at_squares():
    """On real CUB-GHA gaze, GazeMix's pasted square carries more partner gaze, and its replaced square hides less
    own gaze, than a square of the same size at a random place (the average over all places)."""
    from data_adapters.cub_gha import CubGha
    from gazemix.gaze import render_gaze_maps

    samples = CubGha(SHARED / "data" / "cub_gha", runs=(1,)).samples[:64]
    gaze = render_gaze_maps([s.fixations for s in samples], [s.size for s in samples], (112, 112)).maps
    x, y = torch.rand(64, 3, 112, 112, generator=GEN), torch.arange(64)
    r = create_mixer("gazemix", num_classes=64, seed=0, min_side_ratio=0.45, max_side_ratio=0.45)(x, y, gaze=gaze)
    s = r.params["side"] * 16  # 3 tokens of 16 px
    own, partner = r.replay(gaze)
    window_mass = torch.nn.functional.avg_pool2d(gaze, s, stride=16, divisor_override=1).flatten(1)
    random_square = window_mass.mean(1)  # expected gaze in a square at a random token-aligned place
    assert float(partner.mean()) > 1.5 * float(random_square[r.index].mean())
    assert float((1 - own).mean()) < float(random_square.mean())
    assert bool(((r.lam > 0) & (r.lam < 1)).all())


def test_every_model_mixer_runs_from_one_scoring_context():
    """One provider (model, class-token attention, logits) serves TdAttenMix, SMMix and the relabel of TransMix."""
    from gazemix.attention.vit import model_context, patch_attention
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=1,
                              num_classes=4)
    provide = model_context(model)
    x, y = torch.rand(4, 3, 32, 32, generator=GEN), torch.arange(4)
    ctx = provide(x, y)
    sm = create_mixer("smmix", num_classes=4, seed=0, switch_prob=1.0)(x, y, **ctx)
    torch.testing.assert_close(sm.params["clean_logits"], ctx["logits"])
    _, patch = patch_attention(model, x)  # SMMix reads patch-to-patch attention, not the class-token row
    lo, hi = window_extrema(patch, sm.params["side"])
    assert torch.equal(sm.params["own_pos"], lo)
    td = create_mixer("tdattenmix", num_classes=4, seed=0, switch_prob=1.0)(x, y, **ctx)
    assert td.params["maps"].shape == (4, 4, 4)
    tm = create_mixer("transmix", num_classes=4, seed=0, switch_prob=1.0)
    r = tm(x, y, **ctx)
    assert tm.relabel(r, **provide(r.images, y)).params["relabelled"]


def test_official_ratio_mode_sums_windows_in_float32_as_the_released_code():
    """Window sums that tie in float32 but not in float64 pick the first window in the official mode."""
    maps = torch.zeros(1, 2, 3)
    maps[0, :, 1] = 2.0 ** 24  # every 2 x 2 window holds 2 x 2^24 ...
    maps[0, 0, 2] = 1.0  # ... and the right one also a 1, which float32 loses (2^25 + 1 rounds to 2^25)
    _, hi64 = window_extrema(maps, 2)
    _, hi32 = window_extrema(maps, 2, float32_sums=True)
    assert hi64.tolist() == [[0, 1]] and hi32.tolist() == [[0, 0]]
    sums = torch.nn.functional.unfold(maps.unsqueeze(1), 2, stride=1).sum(dim=1)  # the released code's window sums
    assert int(sums.argmax(dim=1)) == 0


def test_official_ratio_mode_ratio_uses_the_released_float32_sums():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(4, 4, 4, generator=g) ** 4
    own_sq = torch.zeros(4, 4, 4, dtype=torch.bool)
    own_sq[:, :2, :2] = True
    src_sq = torch.zeros(4, 4, 4, dtype=torch.bool)
    src_sq[:, 1:3, 2:] = True
    index = torch.tensor([3, 2, 1, 0])
    got = attention_ratio(maps, index, own_sq, src_sq, torch.full((4,), 0.75), "official")
    flat = maps.reshape(4, -1)  # the released code: own map, partner's square coordinates, batch sums in float32
    target, source = torch.sum(flat[(~own_sq).reshape(4, -1)]), torch.sum(flat[src_sq.reshape(4, -1)])
    assert torch.equal(got, (target / (target + source)).expand(4))
    m = create_mixer("tdattenmix", num_classes=4, ratio_mode="official", switch_prob=1.0, patch_size=8, seed=0)
    r = m(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]), topdown=maps)
    assert torch.equal(r.params["lam_attn"], r.params["lam_attn"][:1].expand(4))  # one ratio per batch
