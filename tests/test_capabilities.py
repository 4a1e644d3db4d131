"""Mixer capabilities describe the built instance, and ``content_independent`` is true to its word."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gazemix.registry import create_mixer, list_mixers

# Every registered mixer with its default options, plus the options that change what it needs.
VARIANTS = [(info.name, {}) for info in list_mixers()] + [
    (name, {"saliency_source": source})
    for name in ("saliencymix", "attentivemix", "snapmix", "puzzlemix", "comixup", "rmix", "saliency_grafting")
    for source in ("gaze", "context")
] + [
    ("tdattenmix", {"gaze_weight": 1.0}),
    ("tdattenmix", {"gaze_weight": 0.5}),
    ("tokenmix", {"teacher_labels": False}),
    ("lumix", {"base": "fmix"}),
    ("lumix", {"base": "bc_plus"}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}" for n, o in VARIANTS]


def _build(name: str, options: dict):
    return create_mixer(name, num_classes=4, seed=0, **options)


INDEPENDENT = [(i, v) for i, v in zip(IDS, VARIANTS) if _build(*v).content_independent]


def _pixel_only(result):
    """The same mix with no declared boxes or cells: replay reads every pixel of every share."""
    return dataclasses.replace(result, sources=tuple(dataclasses.replace(s, box=None, cells=None) for s in result.sources))


def _context(b: int, hw: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    gaze = torch.rand(b, 1, hw, hw, generator=g) ** 4
    gaze = gaze / gaze.sum(dim=(1, 2, 3), keepdim=True)
    return {"gaze": gaze, "saliency": torch.rand(b, 1, hw, hw, generator=g),
            "index": torch.roll(torch.arange(b), 1)}


@pytest.mark.parametrize(("name", "options"), [v for _, v in INDEPENDENT], ids=[i for i, _ in INDEPENDENT])
def test_content_independent_mixers_ignore_pixels(name: str, options: dict) -> None:
    mixer = _build(name, options)
    b, hw = 6, 32
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    context = {k: v for k, v in _context(b, hw, 1).items() if k in mixer.needs or k == "index"}
    results = []
    for pixel_seed in (2, 3):
        images = torch.rand(b, 3, hw, hw, generator=torch.Generator().manual_seed(pixel_seed))
        results.append(mixer(images, targets, generator=torch.Generator().manual_seed(7), **context))
    first, second = results
    assert len(first.sources) == len(second.sources)
    torch.testing.assert_close(first.targets, second.targets, rtol=0, atol=0)
    for a, c in zip(first.sources, second.sources):
        torch.testing.assert_close(a.index, c.index, rtol=0, atol=0)
        torch.testing.assert_close(a.weight, c.weight, rtol=0, atol=0)
        torch.testing.assert_close(a.share.float(), c.share.float(), rtol=0, atol=0)
    maps = _context(b, hw, 4)["gaze"]
    torch.testing.assert_close(first.replay_sources(maps), second.replay_sources(maps), rtol=0, atol=0)


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
def test_capabilities_are_consistent(name: str, options: dict) -> None:
    mixer = _build(name, options)
    assert set(mixer.needs) <= {"gaze", "saliency", "model", "attention", "logits"}
    assert mixer.model_kind in (None, "cnn", "vit", "any")
    if "model" in mixer.needs or mixer.relabels_after_forward:
        assert mixer.model_kind is not None, "a mixer that reads a model says which kind"
    if mixer.reads_gaze:
        assert "gaze" in mixer.needs or name == "tdattenmix"
    assert set(type(mixer).modes) <= {"batch", "elem"}


def test_options_change_capabilities() -> None:
    assert _build("puzzlemix", {}).needs == ("model",)
    gaze_puzzle = _build("puzzlemix", {"saliency_source": "gaze"})
    assert gaze_puzzle.needs == ("gaze",) and gaze_puzzle.reads_gaze
    assert not gaze_puzzle.content_independent  # the graph cut's smoothness term compares pixels
    rmix = _build("rmix", {"saliency_source": "gaze"})
    assert rmix.needs == ("gaze",) and rmix.content_independent
    assert _build("tdattenmix", {}).needs == ("model",) and not _build("tdattenmix", {}).reads_gaze
    td_gaze = _build("tdattenmix", {"gaze_weight": 1.0})
    assert td_gaze.needs == ("gaze",) and td_gaze.reads_gaze and td_gaze.content_independent
    assert _build("tdattenmix", {"gaze_weight": 0.5}).reads_gaze
    assert not _build("bc_plus", {}).content_independent
    assert _build("cutmix", {}).content_independent and type(_build("cutmix", {})).modes == ("batch", "elem")


@pytest.mark.parametrize(("name", "options"), [v for _, v in INDEPENDENT], ids=[i for i, _ in INDEPENDENT])
def test_box_and_cell_replay_matches_the_pixel_replay(name: str, options: dict) -> None:
    mixer = _build(name, options)
    b, hw = 6, 48
    context = {k: v for k, v in _context(b, hw, 1).items() if k in mixer.needs or k == "index"}
    images = torch.rand(b, 3, hw, hw, generator=torch.Generator().manual_seed(2))
    result = mixer(images, torch.tensor([0, 1, 2, 3, 0, 1]), generator=torch.Generator().manual_seed(3), **context)
    pixel_only = _pixel_only(result)
    maps = _context(b, hw, 5)["gaze"]
    torch.testing.assert_close(result.replay_sources(maps), pixel_only.replay_sources(maps), rtol=1e-5, atol=1e-6)


def test_box_sources_are_declared_by_the_box_mixers() -> None:
    images = torch.rand(4, 3, 32, 32)
    for name in ("cutmix", "resizemix", "tlalign", "gazemix"):
        mixer = _build(name, {"switch_prob": 1.0} if name == "gazemix" else {})
        context = {"gaze": _context(4, 32, 0)["gaze"]} if name == "gazemix" else {}
        result = mixer(images, torch.tensor([0, 1, 2, 3]), **context)
        assert result.sources[0].box is not None and result.sources[0].box_complement, name
        assert result.sources[1].box is not None and not result.sources[1].box_complement, name


ELEM = [(f"{name}-elem", (name, {"mode": "elem"})) for name in ("cutmix", "fmix", "switch", "mixup")
        if "elem" in type(_build(name, {})).modes]


@pytest.mark.parametrize("pairing", ["permutation", "repeats"])
@pytest.mark.parametrize(("name", "options"), [v for _, v in INDEPENDENT + ELEM], ids=[i for i, _ in INDEPENDENT + ELEM])
def test_replay_of_several_map_sets_equals_one_at_a_time(name: str, options: dict, pairing: str) -> None:
    mixer = _build(name, options)
    b, hw = 8, 40
    context = {k: v for k, v in _context(b, hw, 1).items() if k in mixer.needs}
    context["index"] = torch.roll(torch.arange(b), 3) if pairing == "permutation" else torch.tensor([1, 1, 0, 5, 5, 2, 7, 6])
    images = torch.rand(b, 3, hw, hw, generator=torch.Generator().manual_seed(2))
    result = mixer(images, torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]), generator=torch.Generator().manual_seed(3), **context)
    maps = torch.cat([_context(b, hw, 5)["gaze"], _context(b, hw, 6)["gaze"]], dim=1)
    both = result.replay_masses(maps)
    assert both.shape == (result.images.shape[0], result.num_sources, 2)
    for k in range(2):
        torch.testing.assert_close(both[..., k], result.replay_sources(maps[:, k:k + 1]), rtol=1e-5, atol=1e-7)
        expected = result.source_maps(maps[:, k:k + 1]).sum(dim=(2, 3))
        torch.testing.assert_close(both[..., k], expected, rtol=1e-5, atol=1e-6)


def test_every_warp_moves_several_maps_channel_by_channel() -> None:
    from gazemix.contract import BoxWarp
    from gazemix.learned.transformmix import AffineWarp, similarity_theta
    from gazemix.warps import BlockTransportWarp

    g = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 2, 24, 24, generator=g)
    warps = [
        BoxWarp(src=torch.tensor([[0, 0, 24, 24], [4, 2, 20, 14], [0, 0, 0, 0]]),
                dst=torch.tensor([[2, 2, 10, 12], [0, 0, 24, 24], [0, 0, 0, 0]]), align_corners=True),
        BlockTransportWarp(src=torch.stack([torch.randperm(16, generator=g) for _ in range(3)]).masked_fill_(
            torch.rand(3, 16, generator=g) < 0.2, -1), dst=torch.tensor([[0, 0, 24, 24]] * 3)),
        AffineWarp.from_theta(similarity_theta(torch.rand(3, 4, generator=g) - 0.5)),
    ]
    for warp in warps:
        both = warp.apply_density(maps)
        for k in range(2):
            torch.testing.assert_close(both[:, k:k + 1], warp.apply_density(maps[:, k:k + 1]), rtol=1e-6, atol=1e-7)


def test_box_and_cell_sums_match_masked_sums() -> None:
    from gazemix.contract import box_sums, cell_sums, grid_cell_ids

    maps = torch.rand(4, 2, 13, 10, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[0, 0, 13, 10], [3, 3, 3, 8], [2, 1, 9, 7], [0, 0, 13, 10]])
    index = torch.tensor([2, 0, 3, 3])
    ys, xs = torch.arange(13).view(1, 13, 1), torch.arange(10).view(1, 1, 10)
    inside = (ys >= boxes[:, 0, None, None]) & (ys < boxes[:, 2, None, None]) & (xs >= boxes[:, 1, None, None]) \
        & (xs < boxes[:, 3, None, None])
    expected = (maps[index] * inside.unsqueeze(1)).sum(dim=(2, 3))
    torch.testing.assert_close(box_sums(maps, index, boxes), expected)
    torch.testing.assert_close(box_sums(maps, index, boxes, maps.sum(dim=(2, 3))), expected)
    for grid in ((4, 3), (13, 10), (1, 5)):  # sides that the grid does not divide, one pixel per cell, one row
        rows, cols = grid_cell_ids(13, grid[0]), grid_cell_ids(10, grid[1])
        assert rows[0] == 0 and rows[-1] == grid[0] - 1 and bool((rows.diff() >= 0).all())
        one_hot = (rows.view(-1, 1, 1, 1) == torch.arange(grid[0]).view(1, 1, -1, 1)) \
            & (cols.view(1, -1, 1, 1) == torch.arange(grid[1]).view(1, 1, 1, -1))
        expected = torch.einsum("ncyx,yxij->ncij", maps, one_hot.float())
        torch.testing.assert_close(cell_sums(maps, grid), expected)
    torch.testing.assert_close(cell_sums(maps[..., :12, :10], (4, 5)),
                               maps[..., :12, :10].reshape(4, 2, 4, 3, 5, 2).sum(dim=(3, 5)))


def test_grid_and_mosaic_mixers_declare_what_replay_can_sum() -> None:
    images, targets = torch.rand(8, 3, 32, 32), torch.arange(8) % 4
    grid = _build("gridmix", {})(images, targets, generator=torch.Generator().manual_seed(0))
    assert grid.sources[0].cells is not None and torch.equal(grid.sources[1].cells, ~grid.sources[0].cells)
    splice = _build("splicemix", {"drop_prob": 1.0})(images, targets, generator=torch.Generator().manual_seed(0))
    for src in splice.sources:
        assert src.box is not None and torch.equal(src.box, src.warp.dst)
        shown = src.share.flatten(1).any(dim=1)
        empty = (src.box[:, 2] <= src.box[:, 0]) | (src.box[:, 3] <= src.box[:, 1])
        assert torch.equal(shown, ~empty)  # a dropped cell or an absent original is an empty box
    context = _context(8, 32, 1)
    for name in ("rmix", "saliency_grafting", "attentivemix", "comixup"):  # patches upsampled by nearest interpolation
        result = _build(name, {"saliency_source": "gaze"})(images, targets, generator=torch.Generator().manual_seed(0),
                                                           gaze=context["gaze"])
        assert all(s.cells is not None for s in result.sources), name


def test_upsampled_cells_are_nearest_upsampling_and_declared_only_on_the_standard_grid() -> None:
    import torch.nn.functional as F

    from gazemix.contract import grid_cell_ids, upsample_cells

    cells = torch.rand(2, 4, 3, generator=torch.Generator().manual_seed(0))
    declared = 0
    for hw in ((32, 24), (82, 30), (94, 9), (13, 7)):
        pixels, same = upsample_cells(cells, hw)
        torch.testing.assert_close(pixels, F.interpolate(cells.unsqueeze(1), size=hw, mode="nearest"), rtol=0, atol=0)
        on_grid = torch.equal(pixels, cells.index_select(1, grid_cell_ids(hw[0], 4)).index_select(2, grid_cell_ids(hw[1], 3)).unsqueeze(1))
        assert (same is not None) == on_grid
        declared += same is not None
    assert 0 < declared < 4  # (82, 30): nearest's float scale leaves the standard grid, so no cells are declared


def test_comixup_declares_its_block_shares_and_replays_them_exactly() -> None:
    mixer = _build("comixup", {"saliency_source": "gaze"})
    b, hw = 8, 32
    context = _context(b, hw, 1)
    result = mixer(torch.rand(b, 3, hw, hw), torch.arange(b) % 4, generator=torch.Generator().manual_seed(0),
                   gaze=context["gaze"])
    assert all(s.cells is not None for s in result.sources)
    pixel_only = _pixel_only(result)
    maps = torch.cat([_context(b, hw, 5)["gaze"], _context(b, hw, 6)["gaze"]], dim=1)
    torch.testing.assert_close(result.replay_masses(maps), pixel_only.replay_masses(maps), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("hw", [32, 31])  # a grid that divides the image (cells declared), one that does not
def test_puzzlemix_block_replay_matches_the_pixel_replay(hw: int) -> None:
    mixer = _build("puzzlemix", {"saliency_source": "gaze"})
    b = 6
    context = _context(b, hw, 1)
    result = mixer(torch.rand(b, 3, hw, hw), torch.arange(b) % 4, generator=torch.Generator().manual_seed(0),
                   gaze=context["gaze"], index=context["index"])
    assert all((s.cells is not None) == (hw % result.params["grid"] == 0) for s in result.sources)
    pixel_only = _pixel_only(result)
    maps = torch.cat([_context(b, hw, 5)["gaze"], _context(b, hw, 6)["gaze"]], dim=1)
    torch.testing.assert_close(result.replay_masses(maps), pixel_only.replay_masses(maps), rtol=1e-5, atol=1e-7)
