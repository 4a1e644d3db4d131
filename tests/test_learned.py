"""Learned mixers: AutoMix (Mix Block, momentum encoder, bi-level losses) and TransformMix (search phase, warps)."""

from __future__ import annotations

import math

import pytest
import torch

from gazemix.cli import main
from gazemix.contract import MixerInputError
from gazemix.learned.automix import MixBlock, mask_loss, momentum_at
from gazemix.learned.base import MixerCheckpointError
from gazemix.learned.transformmix import AffineWarp, similarity_theta
from gazemix.registry import create_mixer
from gazemix.training.data import BatchAugment
from gazemix.training.model import build_model

K, S, B = 5, 32, 6
CPU = torch.device("cpu")


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 3, S, S, generator=g), torch.randint(0, K, (B,), generator=g)


def gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def backbone() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("test_resnet", K, S)


def automix(backbone: torch.nn.Module, **opts) -> object:
    m = create_mixer("automix", num_classes=K, seed=0, **opts)
    m.setup_training(backbone, loader=[], augment=None, total_steps=100, device=CPU)
    return m


# ------------------------------------------------------------------------------------------------ AutoMix
def test_mix_block_share_is_a_valid_per_pixel_share_and_depends_on_lambda():
    torch.manual_seed(0)
    block = MixBlock(8, upsampling="nearest")
    z, index = torch.randn(4, 8, 2, 2), torch.tensor([1, 2, 3, 0])
    own = block(z, torch.full((4,), 0.3), index, (16, 16))
    assert own.shape == (4, 1, 16, 16) and bool(((own > 0) & (own < 1)).all())
    assert torch.equal(own[..., :8, :8], own[..., :1, :1].expand(-1, -1, 8, 8))  # nearest: 8x8 cells per feature
    assert not torch.allclose(own, block(z, torch.full((4,), 0.7), index, (16, 16)))  # lambda-conditioned
    with pytest.raises(ValueError, match="upsampling"):
        MixBlock(8, upsampling="cubic")


def test_momentum_schedule_and_mask_loss_by_hand():
    assert momentum_at(5, 100, 0.999, 0.999999) == 0.999  # constant during the first 10 %
    assert momentum_at(100, 100, 0.999, 0.999999) == pytest.approx(0.999999)
    assert momentum_at(55, 100, 0.999, 0.999999) == pytest.approx((0.999 + 0.999999) / 2)  # half way: cos = 0
    own = torch.full((2, 1, 4, 4), 0.5)
    assert float(mask_loss(own, torch.tensor([0.8, 0.8]), 0.1)) == pytest.approx(0.2)
    assert float(mask_loss(own, torch.tensor([0.55, 0.55]), 0.1)) == 0.0


def test_automix_result_mixes_pixels_by_its_mask_and_replays(backbone):
    m = automix(backbone)
    x, y = batch()
    x0 = x.clone()
    r = m(x, y, generator=gen())
    assert torch.equal(x, x0)
    own = r.mask
    assert bool(((own >= 0) & (own <= 1)).all())
    torch.testing.assert_close(r.images, own * x + (1 - own) * x[r.index])
    torch.testing.assert_close(r.lam + r.partner_lam, torch.ones(B))
    ones = torch.ones(B, 1, S, S)
    mine, partner = r.replay(ones)
    torch.testing.assert_close(mine, own.sum(dim=(1, 2, 3)), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(mine + partner, torch.full((B,), float(S * S)), rtol=1e-4, atol=1e-3)


def test_automix_falls_back_to_mixup_inside_the_lambda_margin(backbone):
    m = automix(backbone)
    x, y = batch()
    params = m.sample(x, y, generator=gen())
    r = m.apply(x, y, {**params, "lam": torch.full((B,), 0.05)})
    assert torch.equal(r.mask, torch.full((B, 1, S, S), 0.05))


def test_a_few_steps_reduce_the_mix_block_loss(backbone):
    m = automix(backbone, block_lr=0.05)
    x, y = batch()
    clean = backbone(x).detach()
    first = None
    for _ in range(5):
        r = m(x, y, generator=gen(7))  # the same lambdas and partners every step
        losses = m.extra_losses(x, y, r, clean_logits=clean)
        own_loss = losses["mix_block"] + losses["mask"]
        first = float(own_loss.detach()) if first is None else first
        own_loss.backward()
        assert all(p.grad is None for p in backbone.parameters())  # the Mix Block loss never reaches the model
        m.after_step()
    assert float(own_loss.detach()) < first


def test_automix_save_and_load_give_the_same_mask(backbone, tmp_path):
    m = automix(backbone)
    x, y = batch()
    m.save(tmp_path / "mixer.pt")
    again = create_mixer("automix", num_classes=K, checkpoint=str(tmp_path / "mixer.pt"))
    a, b = m(x, y, generator=gen(3)), again(x, y, generator=gen(3))
    assert torch.equal(a.index, b.index) and torch.equal(a.lam, b.lam)
    torch.testing.assert_close(a.mask, b.mask)
    automix(backbone, lam_embedding="none", reduction=4).save(tmp_path / "other.pt")
    block = create_mixer("automix", checkpoint=str(tmp_path / "other.pt")).block  # rebuilt as it was trained
    assert block.lam_embedding == "none" and block.inter == block.query.in_channels // 4


def test_scoring_passes_the_checkpoint_to_the_learned_mixer(backbone, tmp_path):
    from gazemix.scoring import build_mixers

    automix(backbone).save(tmp_path / "mixer.pt")
    mixers, skipped = build_mixers("automix", num_classes=K, seed=0, has_images=True,
                                   mixer_opts={"automix": {"checkpoint": str(tmp_path / "mixer.pt")}})
    assert not skipped and mixers["automix"](*batch(), generator=gen()).mask.shape == (B, 1, S, S)


def test_learned_mixers_without_weights_say_what_to_pass(tmp_path):
    x, y = batch()
    with pytest.raises(MixerInputError, match="checkpoint=<out>/mixer.pt"):
        create_mixer("automix", num_classes=K)(x, y)
    with pytest.raises(MixerInputError, match="checkpoint=<out>/mixer.pt"):
        create_mixer("transformmix", num_classes=K)(x, y)
    with pytest.raises(MixerCheckpointError, match="no such file"):
        create_mixer("automix", checkpoint=str(tmp_path / "missing.pt"))
    torch.save({"model": {}}, tmp_path / "best.pt")
    with pytest.raises(MixerCheckpointError, match="not a gazemix mixer checkpoint"):
        create_mixer("transformmix", checkpoint=str(tmp_path / "best.pt"))


def test_cli_train_automix_writes_a_mixer_checkpoint_that_reloads(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", "demo", "--demo-train", "16", "--demo-val", "8", "--model", "test_resnet", "--img-size",
            str(S), "--epochs", "1", "--batch-size", "8", "--max-steps", "2", "--workers", "0", "--device", "cpu",
            "--quiet", "--mixer", "automix", "--out", str(out)]
    assert main(args) == 0
    m = create_mixer("automix", num_classes=K, checkpoint=str(out / "mixer.pt"))
    r = m(*batch(), generator=gen())
    assert r.mask.shape == (B, 1, S, S) and bool(((r.mask >= 0) & (r.mask <= 1)).all())


# ------------------------------------------------------------------------------------------------ TransformMix
def test_affine_warp_moves_pixels_and_keeps_exactly_the_shown_mass():
    g = torch.ones(1, 1, 8, 8)
    identity = AffineWarp.from_theta(similarity_theta(torch.zeros(1, 4)))
    torch.testing.assert_close(identity.apply_density(g), g)
    shift = AffineWarp.from_theta(torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]]))  # shows source x + 0.5
    x = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 8, 8)
    torch.testing.assert_close(shift.apply(x)[0, 0, 0, :6], torch.arange(2.0, 8.0))  # 2 columns to the left
    assert float(shift.apply_density(g).sum()) == pytest.approx(6 * 8)  # the 6 source columns still shown
    assert shift.index_select(torch.tensor([0, 0])).src.shape == (2, 2, 3)


def teacher_checkpoint(path, model) -> str:
    torch.save({"model": model.state_dict(), "num_classes": K,
                "config": {"model": "test_resnet", "img_size": S, "patch_size": None}}, path)
    return str(path)


def test_transformmix_search_reduces_its_loss_and_mixes_through_warps(backbone, tmp_path):
    m = create_mixer("transformmix", num_classes=K, seed=0, teacher=teacher_checkpoint(tmp_path / "t.pt", backbone))
    m.use_teacher(backbone)
    x, y = batch()
    opt = torch.optim.Adam(m.module.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        loss = sum(m.search_loss(x, y, gen(5)).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    x0 = x.clone()
    r = m(x, y, generator=gen())
    assert torch.equal(x, x0)
    own = r.mask
    assert bool(((own >= 0) & (own <= 1)).all())
    w_own, w_partner = r.sources[0].warp, r.sources[1].warp
    torch.testing.assert_close(r.images, own * w_own.apply(x) + (1 - own) * w_partner.apply(x[r.index]))
    maps = torch.rand(B, 1, S, S, generator=gen(2))
    mine, partner = r.replay(maps)
    torch.testing.assert_close(mine, (own * w_own.apply_density(maps)).sum(dim=(1, 2, 3)))
    torch.testing.assert_close(partner, ((1 - own) * w_partner.apply_density(maps[r.index])).sum(dim=(1, 2, 3)))


def test_transformmix_search_phase_in_setup_and_reload(backbone, tmp_path):
    m = create_mixer("transformmix", num_classes=K, seed=0, teacher=teacher_checkpoint(tmp_path / "t.pt", backbone))
    x, y = batch()
    loader = [(x.sigmoid(), y)] * 2
    m.setup_training(backbone, loader=loader, augment=BatchAugment(S), total_steps=2, device=CPU)
    assert not any(p.requires_grad for p in m.module.parameters())  # frozen after the search
    m.save(tmp_path / "mixer.pt")
    again = create_mixer("transformmix", num_classes=K, checkpoint=str(tmp_path / "mixer.pt"))
    a, b = m(x, y, generator=gen(4)), again(x, y, generator=gen(4))
    torch.testing.assert_close(a.mask, b.mask)
    torch.testing.assert_close(a.images, b.images)
    with pytest.raises(MixerInputError, match="needs a teacher"):
        create_mixer("transformmix", num_classes=K).setup_training(backbone, loader=loader, augment=BatchAugment(S),
                                                                   total_steps=1, device=CPU)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_learned_mixers_follow_the_input_device(backbone):
    m = create_mixer("automix", num_classes=K, seed=0)
    m.setup_training(backbone, loader=[], augment=None, total_steps=10, device=torch.device("cuda"))
    x, y = batch()
    r = m(x.cuda(), y.cuda(), generator=gen())
    assert r.mask.device.type == "cuda" and math.isfinite(float(r.mask.sum()))
