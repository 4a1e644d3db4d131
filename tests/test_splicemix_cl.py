"""SpliceMix-CL: cells of the mosaics' feature maps against their source images, added through the training hooks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gazemix.contract import ForwardOutputs
from gazemix.mixers.splicemix_cl import cell_logits, consistency_loss, split_cells
from gazemix.models import build_model
from gazemix.registry import create_mixer
from gazemix.training import train
from tests.test_train import cfg, tiny_data
from tests.test_training_hooks import _trainer

K = 3


def test_cells_are_cut_in_raster_order_and_resized_when_the_grid_does_not_divide():
    maps = torch.arange(2 * 4 * 6, dtype=torch.float32).view(2, 1, 4, 6)
    cells = split_cells(maps, 2, 3)
    assert cells.shape == (12, 1, 2, 2)
    torch.testing.assert_close(cells[1, 0], maps[0, 0, :2, 2:4])  # map 0, row 0, column 1
    torch.testing.assert_close(cells[3 + 6, 0], maps[1, 0, 2:, :2])  # map 1, row 1, column 0
    odd = split_cells(torch.rand(1, 2, 5, 7), 2, 3)  # resized to 4 x 6 (align_corners=True), then cut
    assert odd.shape == (6, 2, 2, 2)
    tiny = split_cells(torch.rand(1, 2, 1, 1), 2, 3)  # a map smaller than the grid: one feature per cell
    assert tiny.shape == (6, 2, 1, 1)


class MeanHead(nn.Module):
    """A stand-in CNN whose head is the spatial mean of channel 0 (logit 0) and of channel 1 (logit 1)."""

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def test_each_cell_is_read_against_the_image_it_shows():
    torch.manual_seed(0)
    mixer = create_mixer("splicemix_cl", num_classes=K, seed=3, grid_probs=(0.0, 0.0, 1.0), drop_prob=0.0)
    x, y = torch.rand(8, 3, 24, 24), torch.arange(8) % K
    r = mixer(x, y)
    rows, cols = r.params["grid"]
    tiles = r.params["tiles"]
    # features of the mosaics where each cell region holds the id of the image shown there
    feats = torch.zeros(tiles.shape[0], 2, rows * 2, cols * 2)
    for m in range(tiles.shape[0]):
        for cell in range(rows * cols):
            i, j = divmod(cell, cols)
            feats[m, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2] = float(tiles[m, cell])
    got = cell_logits(MeanHead(), feats, (rows, cols), (24, 24))
    torch.testing.assert_close(got[:, 0], tiles.reshape(-1).float())


def test_vit_cells_read_the_mean_token_through_the_models_head():
    model = build_model("test_vit", K, 32, patch_size=8).eval()
    feats = model.forward_features(torch.rand(2, 3, 32, 32))
    got = cell_logits(model, feats, (2, 2), (32, 32))
    grid = feats[:, 1:].reshape(2, 4, 4, -1)
    first = grid[0, :2, :2].reshape(4, -1).mean(0)  # mosaic 0, top-left cell: tokens (0..1, 0..1)
    torch.testing.assert_close(got[0], model.head(model.fc_norm(first)))
    assert got.shape == (8, K)


def test_loss_matches_the_official_masked_multilabel_soft_margin():
    g = torch.Generator().manual_seed(0)
    cells, sources = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    kept = torch.tensor([True, False, True, True, False, True])
    dropped = (~kept)[:, None]
    # official: both sides filled with -1e3 on dropped cells, MultiLabelSoftMarginLoss against sigmoid(source)
    ref = nn.MultiLabelSoftMarginLoss()(cells.masked_fill(dropped, -1e3), sources.masked_fill(dropped, -1e3).sigmoid())
    torch.testing.assert_close(consistency_loss(cells, sources, kept), ref)
    ce = consistency_loss(cells, sources, kept, loss="ce")
    want = -(sources.softmax(-1) * cells.log_softmax(-1)).sum(-1)[kept].sum() / 6
    torch.testing.assert_close(ce, want)
    with pytest.raises(ValueError, match="loss must be one of"):
        consistency_loss(cells, sources, kept, loss="kl")


def test_the_source_side_is_detached_unless_asked():
    cells = torch.randn(4, 3, requires_grad=True)
    for detach, has_grad in ((True, False), (False, True)):
        sources = torch.randn(4, 3, requires_grad=True)
        consistency_loss(cells, sources, torch.ones(4, dtype=torch.bool), detach_target=detach).backward()
        assert (sources.grad is not None) == has_grad and cells.grad is not None


def test_hooks_add_the_weighted_term_and_nothing_when_off():
    torch.manual_seed(0)
    model = build_model("test_resnet", K, 64)
    x, y = torch.rand(8, 3, 64, 64), torch.arange(8) % K
    mixer = create_mixer("splicemix_cl", num_classes=K, seed=0, cl_weight=0.5)
    r = mixer(x, y)
    assert mixer.training_hooks().request(r).features
    feats = model.forward_features(r.images)
    logits = model.forward_head(feats).float()
    out = ForwardOutputs(images=x, labels=y, result=r, logits=logits, model=model, features=feats)
    term = mixer.training_hooks().losses(out)["consistency"]
    n_mix = r.params["tiles"].shape[0]
    cells = cell_logits(model, feats[8:8 + n_mix], r.params["grid"], (64, 64))
    full = consistency_loss(cells, logits[r.params["tiles"].reshape(-1)], ~r.params["dropped"].reshape(-1))
    torch.testing.assert_close(term, 0.5 * full)
    assert mixer.training_hooks(auxiliary_losses=False).losses(out) == {}
    with pytest.raises(ValueError, match="cl_loss"):
        create_mixer("splicemix_cl", cl_loss="mse")


@pytest.mark.parametrize("model, size", [("test_vit", 32), ("test_resnet", 64)])
def test_splicemix_cl_trains_through_the_hooks(tmp_path, model, size):
    torch.manual_seed(0)
    backbone = build_model(model, K, size, patch_size=8 if model == "test_vit" else None)
    trainer = _trainer(create_mixer("splicemix_cl", num_classes=K, seed=0), backbone)
    out = trainer.step(torch.rand(8, 3, size, size), torch.arange(8) % K, None, epoch=0)
    assert set(out.parts) == {"ce", "consistency"} and float(out.parts["consistency"]) > 0
    torch.testing.assert_close(out.loss, out.parts["ce"] + out.parts["consistency"])
    result = train(cfg(tmp_path, mixer="splicemix_cl", model=model, patch_size=8 if model == "test_vit" else None,
                       img_size=size, max_steps=2), data=tiny_data(size=size + 4))
    assert math.isfinite(result["train_loss"]) and result["epoch"] == 1
