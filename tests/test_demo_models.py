"""The demo CNN and ViT: trained once and cached, any input size, and every model-driven mixer runs with them.

Tiny settings throughout (64 training images, one epoch): these check the plumbing, not the
accuracy (the default models' figures are in the README and come from ``load_or_train_demo_models()``).
"""

from __future__ import annotations

import dataclasses
import inspect
import shutil

import pytest
import torch
import torch.nn.functional as F

import gazemix.demo_models as demo_models
from gazemix.attention.topdown import topdown_attention
from gazemix.attention.vit import AttentionHook
from gazemix.demo import make_demo
from gazemix.demo_models import (RESOLUTION, DemoModelConfig, build_demo_model, cache_key, load_or_train_demo_models,
                                 train_learned_mixers, vit_mixer_options, vit_patch_size)
from gazemix.registry import create_mixer, mixer_class

TINY = DemoModelConfig(train_images=64, val_images=32, eval_images=16, eval_size=64, batch_size=32,
                       cnn_epochs=1, vit_epochs=1)
SIZE = 64
CNN_MIXERS = ("snapmix", "attentivemix", "puzzlemix", "comixup", "rmix", "saliency_grafting")
VIT_MIXERS = ("transmix", "tokenmix", "mixpro", "smmix", "tdattenmix")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("demo-models")


@pytest.fixture(scope="module")
def models(cache):
    return load_or_train_demo_models(cache, config=TINY, progress=False, img_size=SIZE)


@pytest.fixture(scope="module")
def batch():
    demo = make_demo(n=8, size=SIZE, seed=7)
    return demo.images, demo.labels, demo.gaze


def _no_training(*args, **kwargs):
    raise AssertionError("the models were trained again although the cache holds them")


def test_trained_once_then_loaded(models, cache, monkeypatch):
    assert models.trained_now and models.path.is_file() and models.path.parent == cache
    for kind in ("cnn", "vit"):
        assert 0.0 <= models.accuracy[kind] <= 100.0 and 0.0 <= models.train_accuracy[kind] <= 100.0
        assert models.seconds[kind] > 0
    assert models.seconds["total"] >= models.seconds["cnn"] + models.seconds["vit"]
    assert "held-out top-1" in models.summary()
    monkeypatch.setattr(demo_models, "_train_both", _no_training)
    again = load_or_train_demo_models(cache, config=TINY, progress=False, img_size=SIZE)
    assert not again.trained_now and again.path == models.path and again.accuracy == models.accuracy
    for a, b in zip(again.vit.state_dict().values(), models.vit.state_dict().values()):
        assert torch.equal(a, b)
    large = load_or_train_demo_models(cache, config=TINY, progress=False, img_size=224)  # same file, other size
    assert not large.trained_now and large.vit.patch_embed.patch_size == (28, 28)


def test_cache_key_follows_every_setting():
    key = cache_key(TINY, 0)
    assert key == cache_key(DemoModelConfig(**dataclasses.asdict(TINY)), 0) and len(key) == 16
    assert cache_key(TINY, 1) != key
    for change in ({"vit_epochs": 2}, {"cnn_epochs": 2}, {"train_images": 96}, {"vit_lr": 2e-3},
                   {"crop_scale": (0.5, 1.0)}, {"eval_size": 224}):
        assert cache_key(dataclasses.replace(TINY, **change), 0) != key, change


def test_a_corrupt_cache_is_reported_in_one_line_and_rebuilt(models, tmp_path, capsys):
    copy = tmp_path / models.path.name
    shutil.copy(models.path, copy)
    copy.write_bytes(copy.read_bytes()[:1000])  # a truncated file
    rebuilt = load_or_train_demo_models(tmp_path, config=TINY, progress=False, img_size=SIZE)
    lines = [line for line in capsys.readouterr().err.splitlines() if "cannot be used" in line]
    assert rebuilt.trained_now and len(lines) == 1 and str(copy) in lines[0]
    assert not load_or_train_demo_models(tmp_path, config=TINY, progress=False, img_size=SIZE).trained_now


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="vit_epochs"):
        DemoModelConfig(vit_epochs=0)
    with pytest.raises(ValueError, match="one batch"):
        DemoModelConfig(train_images=8, batch_size=16)
    with pytest.raises(ValueError, match="kind"):
        build_demo_model("rnn")
    with pytest.raises(ValueError, match="no pretrained weights"):
        demo_models.gazemix_demo_vit(pretrained=True)


def test_the_networks_resize_their_input(models, batch):
    images = batch[0]
    images = F.interpolate(images, size=(96, 96), mode="bilinear", align_corners=False)  # larger than RESOLUTION
    vit_big = build_demo_model("vit", 96).eval()
    vit_big.load_state_dict(models.vit.state_dict())
    small = F.interpolate(images, size=(RESOLUTION,) * 2, mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():  # resizing inside the network = resizing before it
        assert torch.allclose(vit_big(images), models.vit(small), atol=1e-5)
        assert torch.allclose(models.cnn(images), models.cnn(small), atol=1e-5)
        assert models.cnn.forward_features(images).shape[-2:] == (8, 8)
    with AttentionHook(vit_big) as hook:  # the 8 x 8 token grid spans the 96-px image
        vit_big(images)
    assert hook.cls_attention().shape == (8, 8, 8)
    assert vit_big.patch_embed.patch_size == (vit_patch_size(96),) * 2 == (12, 12)
    assert models.cnn.pretrained_cfg["architecture"] == "gazemix_demo_cnn"


def test_tdattenmix_reads_its_top_down_map_from_the_demo_vit(models, batch):
    images, labels, _ = batch
    td = topdown_attention(models.vit, images, labels)
    assert td.shape == (8, 8, 8) and bool((td >= 0).all()) and bool((td.flatten(1).sum(1) > 0).all())
    mixer = create_mixer("tdattenmix", num_classes=6, seed=0, switch_prob=1.0, **vit_mixer_options(SIZE)["tdattenmix"])
    result = mixer(images, labels, **models.context_provider("vit")(images, labels))
    assert result.params["use_square"] and torch.allclose(result.params["maps"], td)


def _options(name: str) -> dict:
    cls = mixer_class(name)
    opts = dict(vit_mixer_options(SIZE).get(name, {}))
    if "mode" in inspect.signature(cls.__init__).parameters:
        opts["mode"] = "elem"
    return opts


@pytest.mark.parametrize("name", CNN_MIXERS + VIT_MIXERS)
def test_each_model_driven_mixer_runs_with_the_demo_models(models, batch, name):
    images, labels, _ = batch
    kind = "vit" if name in VIT_MIXERS else "cnn"
    assert mixer_class(name).needs != () or mixer_class(name).relabels_after_forward
    mixer = create_mixer(name, num_classes=6, seed=0, **_options(name))
    context = models.context_provider(kind)(images, labels)
    result = mixer(images, labels, generator=torch.Generator().manual_seed(1), **context)
    if mixer.relabels_after_forward:
        result = mixer.relabel(result, **models.context_provider("vit")(result.images, labels))
    assert result.images.shape[1:] == images.shape[1:] and bool(torch.isfinite(result.images).all())
    assert result.targets.shape == (result.images.shape[0], 6) and bool(torch.isfinite(result.lam).all())
    assert images.equal(batch[0])  # inputs untouched


def test_learned_mixers_train_once_then_reload(models, cache, batch):
    paths = train_learned_mixers(cache, config=TINY, progress=False)
    assert set(paths) == {"automix", "transformmix"} and all(p.is_file() and p.parent == cache for p in paths.values())
    stamps = {name: p.stat().st_mtime_ns for name, p in paths.items()}
    assert train_learned_mixers(cache, config=TINY, progress=False) == paths
    assert {name: p.stat().st_mtime_ns for name, p in paths.items()} == stamps  # loaded, not written again
    images, labels, _ = batch
    for name, path in paths.items():
        mixer = create_mixer(name, num_classes=6, seed=0, checkpoint=str(path))
        result = mixer(images, labels, generator=torch.Generator().manual_seed(0))
        assert result.images.shape == images.shape and bool(torch.isfinite(result.lam).all())
    with pytest.raises(ValueError, match="learned demo mixers"):
        train_learned_mixers(cache, names=("cutmix",), config=TINY, progress=False)
