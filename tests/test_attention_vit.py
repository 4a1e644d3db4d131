"""The ViT attention hook: same-forward capture, rows summing to 1, unchanged outputs, prefix tokens, grids."""

from __future__ import annotations

import pytest
import timm
import torch

from gazemix.attention.vit import (AttentionCaptureError, AttentionHook, as_patch_grid, class_token_attention,
                                   grid_mass, patch_attention, token_edges)
from gazemix.contract import MixerInputError


def tiny(name: str = "vit_tiny_patch16_224", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, img_size=32, patch_size=8, depth=2, num_classes=5, **kw).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name,kw,prefix", [("vit_tiny_patch16_224", {}, 1),
                                            ("deit_tiny_distilled_patch16_224", {}, 2),
                                            ("vit_tiny_patch16_224", {"reg_tokens": 4}, 5),
                                            ("vit_tiny_patch16_224", {"class_token": False, "global_pool": "avg"}, 0)])
def test_hook_rows_sum_to_one_and_output_unchanged(images, name, kw, prefix):
    model = tiny(name, **kw)
    reference = model(images)
    with AttentionHook(model) as hook:
        out = model(images)
    assert torch.equal(out, reference)  # the hook never touches the forward (fused attention stays on)
    a = hook.matrix()
    n = 16 + prefix
    assert a.shape == (3, 3, n, n)
    torch.testing.assert_close(a.sum(-1), torch.ones(3, 3, n))
    assert hook.prefix == prefix
    assert hook.patch_attention().shape == (3, 4, 4)
    assert not any(h for h in model.blocks[-1].attn._forward_pre_hooks.values())  # removed on exit


def test_hook_matches_materialised_softmax(images):
    """The recomputed matrix equals the one timm itself computes with fusion switched off."""
    model = tiny()
    model.blocks[-1].attn.fused_attn = False
    seen = {}
    handle = model.blocks[-1].attn.attn_drop.register_forward_hook(lambda m, i, o: seen.setdefault("a", o))
    with AttentionHook(model) as hook:
        model(images)
    handle.remove()
    torch.testing.assert_close(hook.matrix(), seen["a"])


def test_cls_and_patch_attention_read_the_right_entries(images):
    model = tiny("deit_tiny_distilled_patch16_224")
    logits, cls_map = class_token_attention(model, images)
    with AttentionHook(model) as hook:
        model(images)
    a = hook.matrix().mean(1)
    torch.testing.assert_close(cls_map.flatten(1), a[:, 0, 2:])
    torch.testing.assert_close(hook.patch_attention().flatten(1), a[:, 2:, 2:].mean(1))
    assert logits.shape == (3, 5)
    assert float(cls_map.sum(dim=(1, 2)).max()) <= 1.0 + 1e-6  # prefix columns take the rest of the row


def test_patch_attention_runs_in_eval_without_grad_and_restores_mode(images):
    model = tiny()
    model.train()
    logits, maps = patch_attention(model, images)
    assert model.training and not logits.requires_grad and maps.shape == (3, 4, 4)
    model.eval()
    torch.testing.assert_close(logits, model(images))


def test_several_blocks_and_callback(images):
    model = tiny()
    seen = []
    with AttentionHook(model, blocks=(0, 1), keep=False, callback=lambda i, a: seen.append((i, a.shape))):
        model(images)
    assert seen == [(0, (3, 3, 17, 17)), (1, (3, 3, 17, 17))]


def test_errors(images):
    model = tiny()
    hook = AttentionHook(model)
    with pytest.raises(AttentionCaptureError, match="no attention was captured"):
        hook.matrix()
    with pytest.raises(ValueError, match="blocks must index"):
        AttentionHook(model, blocks=(5,))
    with pytest.raises(AttentionCaptureError, match="no `blocks`"):
        AttentionHook(torch.nn.Linear(3, 3))


def test_as_patch_grid_and_grid_mass():
    flat = torch.arange(12.0).view(1, 12)
    assert as_patch_grid(flat, (30, 40)).shape == (1, 3, 4)
    with pytest.raises(MixerInputError, match="do not form a grid"):
        as_patch_grid(torch.ones(1, 7), (32, 32))
    assert token_edges(4, 37).tolist() == [0, 9, 18, 27, 37]
    g = torch.rand(2, 1, 37, 45)
    m = grid_mass(g, (4, 5))
    assert m.shape == (2, 4, 5)
    torch.testing.assert_close(m.sum(dim=(1, 2)), g.sum(dim=(1, 2, 3)))
    torch.testing.assert_close(m[:, 0, 0], g[:, 0, :9, :9].sum(dim=(1, 2)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_hook_on_cuda(images):
    model = tiny().cuda()
    with AttentionHook(model) as hook:
        model(images.cuda())
    assert hook.matrix().is_cuda


def test_model_context_for_scoring(images):
    from gazemix.attention.vit import model_context
    model = tiny().train()
    ctx = model_context(model)(images, torch.arange(3))
    assert model.training and ctx["model"] is model
    assert ctx["attention"].shape == (3, 4, 4) and ctx["logits"].shape == (3, 5) and not ctx["logits"].requires_grad
