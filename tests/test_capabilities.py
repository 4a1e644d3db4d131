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
def test_box_replay_matches_the_pixel_replay(name: str, options: dict) -> None:
    mixer = _build(name, options)
    b, hw = 6, 48
    context = {k: v for k, v in _context(b, hw, 1).items() if k in mixer.needs or k == "index"}
    images = torch.rand(b, 3, hw, hw, generator=torch.Generator().manual_seed(2))
    result = mixer(images, torch.tensor([0, 1, 2, 3, 0, 1]), generator=torch.Generator().manual_seed(3), **context)
    pixel_only = dataclasses.replace(result, sources=tuple(dataclasses.replace(s, box=None) for s in result.sources))
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
