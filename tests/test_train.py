"""`gazemix train`: smoke runs, determinism, resume, the SMMix/TdAttenMix losses, gaze-following crops, errors."""

from __future__ import annotations

import csv
import math
import json
from pathlib import Path

import pytest
import torch

from gazemix.cli import main
from gazemix.training import TensorGazeDataset, TrainConfig, TrainData, train
from gazemix.training.checkpoint import CheckpointError
from gazemix.training.data import BatchAugment, DataError
from gazemix.training.model import ModelError, build_model, load_pretrained
from tests.conftest import needs_cuda

K = 3


def tiny_data(n_train: int = 16, n_val: int = 8, size: int = 36, seed: int = 0) -> TrainData:
    """Class c is a bright square in colour channel c at a random place; gaze sits on the square."""
    g = torch.Generator().manual_seed(seed)

    def make(n: int, s: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % K
        images = 0.2 * torch.rand(n, 3, s, s, generator=g)
        gaze = torch.zeros(n, 1, s, s)
        pos = torch.randint(0, s - 12, (n, 2), generator=g)
        for i in range(n):
            y, x = pos[i].tolist()
            images[i, labels[i], y:y + 12, x:x + 12] = 0.9
            gaze[i, 0, y:y + 12, x:x + 12] = 1.0 / 144
        return images, labels, gaze

    ti, tl, tg = make(n_train, size)
    vi, vl, _ = make(n_val, 32)
    return TrainData(TensorGazeDataset(ti, tl, tg), TensorGazeDataset(vi, vl), ["r", "g", "b"], True, "tiny squares")


def cfg(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(model="test_vit", patch_size=8, img_size=32, mixer="cutmix", epochs=1, batch_size=8,
                out=str(tmp_path / "run"), workers=0, device="cpu", quiet=True, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def read_metrics(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_one_epoch_smoke_writes_every_output(tmp_path):
    result = train(cfg(tmp_path, mixer="cutmix"), data=tiny_data())
    out = tmp_path / "run"
    for name in ("config.json", "metrics.csv", "curves.png", "last.pt", "best.pt"):
        assert (out / name).is_file(), name
    rows = read_metrics(out)
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    assert 0 <= float(rows[0]["top1"]) <= float(rows[0]["top5"]) <= 100
    assert float(rows[0]["train_loss"]) == pytest.approx(result["train_loss"])
    config = json.loads((out / "config.json").read_text())
    assert config["mixer"] == "cutmix" and config["num_classes"] == K and config["steps_per_epoch"] == 2
    assert config["lr"] == pytest.approx(5e-4 * 8 / 512) and config["drop_path"] == 0.1  # DeiT recipe, recorded
    state = torch.load(out / "last.pt", weights_only=True)
    model = build_model("test_vit", K, 32, patch_size=8)
    assert load_pretrained(model, out / "last.pt") == []  # a checkpoint is also a --pretrained-path file
    assert state["epoch"] == 1


def test_seed_gives_the_same_first_epoch_loss(tmp_path):
    data = tiny_data()
    a = train(cfg(tmp_path, out=str(tmp_path / "a"), mixer="switch"), data=data)
    b = train(cfg(tmp_path, out=str(tmp_path / "b"), mixer="switch"), data=data)
    c = train(cfg(tmp_path, out=str(tmp_path / "c"), mixer="switch", seed=1), data=data)
    assert a["train_loss"] == b["train_loss"]
    assert a["train_loss"] != c["train_loss"]


def test_resume_continues_exactly_where_it_stopped(tmp_path, monkeypatch):
    import gazemix.training.trainer as trainer_module

    data = tiny_data()
    full = train(cfg(tmp_path, out=str(tmp_path / "full"), epochs=2), data=data)
    evaluate, calls = trainer_module.evaluate, []

    def interrupted(*args, **kwargs):  # the run dies during its second epoch, after last.pt of the first
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg(tmp_path, out=str(tmp_path / "part"), epochs=2), data=data)
    monkeypatch.setattr(trainer_module, "evaluate", evaluate)
    resumed = train(cfg(tmp_path, out=str(tmp_path / "part"), epochs=2, resume=str(tmp_path / "part" / "last.pt")),
                    data=data)
    assert resumed["epoch"] == 2
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-5)
    assert resumed["val_loss"] == pytest.approx(full["val_loss"], rel=1e-5)
    assert [r["epoch"] for r in read_metrics(tmp_path / "part")] == ["1", "2"]


@pytest.mark.parametrize("mixer", ["smmix", "tdattenmix", "gazemix"])
def test_square_mixers_add_consistency_and_fine_grained_losses(tmp_path, mixer, monkeypatch):
    from gazemix.training.engine import Trainer

    parts: list[dict[str, float]] = []
    step = Trainer.step

    def spy(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        parts.append(out.parts)
        return out

    monkeypatch.setattr(Trainer, "step", spy)
    train(cfg(tmp_path, mixer=mixer, mixer_options={"switch_prob": 1.0}), data=tiny_data())
    assert parts and all({"ce", "consistency", "fine_grained"} <= set(p) for p in parts)
    assert all(p["consistency"] >= 0 for p in parts)


def test_teacher_logits_from_the_mixers_read_out_equal_an_eval_forward(tmp_path):
    from gazemix.training.engine import Classifier, _FinalTokens
    from gazemix.attention.topdown import class_similarity_map

    torch.manual_seed(0)
    backbone = build_model("test_vit", K, 32, patch_size=8, drop_path=0.1).train()
    x = torch.rand(4, 3, 32, 32)
    with _FinalTokens(backbone) as cap:
        class_similarity_map(backbone, x, torch.tensor([0, 1, 2, 0]))
    backbone.eval()
    with torch.no_grad():
        expected = backbone(x)
        got = backbone.forward_head(cap.tokens)
    torch.testing.assert_close(got, expected)
    logits, tokens = Classifier(backbone)(x, tokens=True)
    assert tokens.shape == (4, 1 + 16, backbone.num_features)


def test_gaze_maps_follow_the_image_crop_and_flip():
    g = torch.Generator().manual_seed(3)
    b, s = 6, 40
    gaze = torch.rand(b, 1, s, s, generator=g) ** 4
    gaze = gaze / gaze.sum(dim=(1, 2, 3), keepdim=True)
    images = (gaze / gaze.amax(dim=(2, 3), keepdim=True)).expand(b, 3, s, s).clone()  # pixels = the gaze map
    aug = BatchAugment(24, (0.3, 1.0), mean=(0, 0, 0), std=(1, 1, 1))
    crops, maps, empty = aug(images, gaze, torch.Generator().manual_seed(0))
    assert int(empty) == 0 and maps.shape == (b, 1, 24, 24)
    torch.testing.assert_close(maps.sum(dim=(1, 2, 3)), torch.ones(b))
    shape = crops[:, :1] / crops[:, :1].sum(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(maps, shape, atol=1e-6, rtol=1e-4)


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["train", "--model", "deit_tny", "--out", str(tmp_path / "x"), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'deit_tny'" in err and "deit_tiny_patch16_224" in err
    assert main(["train", "--mixer", "cutmixx", "--out", str(tmp_path / "x"), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "unknown mixer 'cutmixx'" in err and "mixup" in err


@pytest.mark.parametrize("kw, exc, match", [
    (dict(model="test_resnet", patch_size=None, mixer="smmix"), ModelError, "reads the attention of a Vision"),
    (dict(model="test_resnet", patch_size=None, mixer="tdattenmix"), ModelError, "gaze_weight=1"),
    (dict(img_size=30), ModelError, "not divisible by the patch size 8"),
    (dict(num_classes=5), DataError, "--num-classes 5 does not match .* 3 classes"),
    (dict(batch_size=64), DataError, "fewer than one batch"),
])
def test_bad_settings_are_refused(tmp_path, kw, exc, match):
    with pytest.raises(exc, match=match):
        train(cfg(tmp_path, **kw), data=tiny_data())


def test_empty_data_set_is_refused(tmp_path):
    data = tiny_data()
    empty = TensorGazeDataset(torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.long))
    with pytest.raises(DataError, match="train split of tiny squares is empty"):
        train(cfg(tmp_path), data=TrainData(empty, data.val, data.class_names, False, "tiny squares"))


def test_resume_refuses_corrupt_and_foreign_checkpoints(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or not a PyTorch checkpoint"):
        train(cfg(tmp_path, resume=str(bad)), data=tiny_data())
    weights = tmp_path / "weights.pt"
    torch.save({"head.weight": torch.zeros(3, 3)}, weights)
    with pytest.raises(CheckpointError, match="not a gazemix training checkpoint"):
        train(cfg(tmp_path, resume=str(weights)), data=tiny_data())
    train(cfg(tmp_path, out=str(tmp_path / "r")), data=tiny_data())
    with pytest.raises(CheckpointError, match="trained with --model test_vit"):
        train(cfg(tmp_path, model="test_vit2", resume=str(tmp_path / "r" / "last.pt")), data=tiny_data())


@needs_cuda
def test_cuda_step_with_amp(tmp_path):
    result = train(cfg(tmp_path, device="cuda", mixer="tdattenmix"), data=tiny_data())
    assert result["epoch"] == 1 and result["train_loss"] == result["train_loss"]


def test_cli_trains_on_the_demo_set_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["train", "--data", "demo", "--demo-train", "16", "--demo-val", "8", "--model", "test_vit", "--patch-size",
            "8", "--img-size", "32", "--mixer", "tdattenmix", "--batch-size", "8", "--workers", "0", "--device", "cpu",
            "--quiet", "--out", str(out), "--lr", "1e-3"]
    assert main(args + ["--epochs", "1", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args + ["--epochs", "2", "--resume", "--json"]) == 0  # bare --resume: <out>/last.pt
    second = json.loads(capsys.readouterr().out)
    assert (first["epoch"], second["epoch"]) == (1, 2)
    assert [r["epoch"] for r in read_metrics(out)] == ["1", "2"]
    config = json.loads((out / "config.json").read_text())
    assert config["data_description"].startswith("the synthetic demo set") and config["mixer"] == "tdattenmix"


def test_folder_data_renders_gaze_from_fixation_csvs(tmp_path):
    from PIL import Image

    from gazemix.training.data import build_data

    rng = torch.Generator().manual_seed(0)
    for c, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(5):
            pixels = (255 * torch.rand(30, 40, 3, generator=rng)).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.jpg")
            (tmp_path / name / f"{i}.csv").write_text(f"x,y\n{5 + 20 * c},10\n{6 + 20 * c},12\n")
    data = build_data("folder", str(tmp_path), 32, seed=0, val_fraction=0.2)
    assert data.class_names == ["cat", "dog"] and data.has_gaze
    assert (len(data.train), len(data.val)) == (8, 2)
    image, label, gaze = data.train[0]
    assert image.shape == (3, 36, 36) and gaze.shape == (1, 36, 36)
    assert float(gaze.sum()) == pytest.approx(1.0, abs=1e-5)
    cols = gaze[0].sum(dim=0)  # the fixations sit left (cat, x=5) or right (dog, x=25) of the 40-px image
    left = float(cols[:18].sum())
    assert (left > 0.5) == (int(label) == 0)
    val_image, _ = data.val[0]
    assert val_image.shape == (3, 32, 32)


@pytest.mark.parametrize("mixer, model", [("transmix", "test_vit"), ("mixpro", "test_vit"), ("tokenmix", "test_vit"),
                                          ("tlalign", "test_vit"), ("snapmix", "test_resnet")])
def test_model_dependent_mixers_train(tmp_path, mixer, model):
    patch = 8 if model == "test_vit" else None
    result = train(cfg(tmp_path, mixer=mixer, model=model, patch_size=patch, max_steps=1), data=tiny_data())
    assert math.isfinite(result["train_loss"]) and result["epoch"] == 1


def test_tlalign_targets_follow_the_attention_of_the_training_forward(tmp_path):
    from gazemix.mixers.tlalign import TokenLabelAligner
    from gazemix.registry import create_mixer
    from gazemix.training.engine import Classifier, Trainer

    torch.manual_seed(0)
    backbone = build_model("test_vit", K, 32, patch_size=8).eval()  # eval: no drop-path, so forwards agree
    mixer = create_mixer("tlalign", num_classes=K, patch_size=8, seed=0)
    trainer = Trainer(Classifier(backbone), Classifier(backbone), mixer, None, None, BatchAugment(32), num_classes=K,
                      label_smoothing=0.0, generator=torch.Generator().manual_seed(0), clip_grad=None, amp=False,
                      device=torch.device("cpu"))
    result = mixer(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]), generator=torch.Generator().manual_seed(1))
    logits, targets = trainer._aligned_forward(result)
    ref_logits, ref_targets = TokenLabelAligner(backbone)(result)
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(targets, ref_targets)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(4))


def make_cub_layout(tmp_path: Path, runs: int = 1) -> tuple[Path, Path]:
    """A 6-image CUB-200-2011 folder (classes A, B; images 1-4 train) and CUB-GHA run files: run 1 fixates near
    the right edge for class B and the left edge for class A, run 2 (when ``runs=2``) the opposite edge."""
    from PIL import Image

    cub, gaze_dir = tmp_path / "CUB_200_2011", tmp_path / "data_5runs"
    (cub / "images" / "001.A").mkdir(parents=True)
    (cub / "images" / "002.B").mkdir()
    gaze_dir.mkdir()
    rng = torch.Generator().manual_seed(0)
    images, labels, split, fixations = [], [], [], {r: [] for r in range(1, runs + 1)}
    for i in range(1, 7):
        c = 1 + (i % 2)
        rel = f"00{c}.{'AB'[c - 1]}/img{i}.jpg"
        Image.fromarray((255 * torch.rand(30, 40, 3, generator=rng)).to(torch.uint8).numpy()).save(cub / "images" / rel)
        images.append(f"{i} {rel}")
        labels.append(f"{i} {c}")
        split.append(f"{i} {int(i <= 4)}")
        for r in fixations:
            x = 3 + 30 * ((c - 1) if r == 1 else (2 - c))
            fixations[r].append(f"{i},40,30,{x},15,200,{x + 1},14,150")
    for name, lines in [("images.txt", images), ("image_class_labels.txt", labels), ("train_test_split.txt", split),
                        ("classes.txt", ["1 001.A", "2 002.B"])]:
        (cub / name).write_text("\n".join(lines) + "\n")
    for r, lines in fixations.items():
        (gaze_dir / f"Fixation_run{r}.txt").write_text("\n".join(lines) + "\n")
    return cub, gaze_dir


def test_cub_layout_with_cub_gha_fixations(tmp_path):
    from gazemix.training.data import build_data

    cub, gaze_dir = make_cub_layout(tmp_path)
    with pytest.raises(DataError, match="--fixations"):
        build_data("cub-gha", str(cub), 32)
    data = build_data("cub-gha", str(cub), 32, fixations=[str(gaze_dir)])
    assert data.class_names == ["A", "B"] and data.has_gaze
    assert (len(data.train), len(data.val)) == (4, 2)
    image, label, gaze = data.train[0]  # image 1: class B, fixations near the right edge
    assert int(label) == 1 and image.shape == (3, 36, 36)
    cols = gaze[0].sum(dim=0)
    assert float(cols[18:].sum()) > 0.9
    result = train(cfg(tmp_path, data="cub-gha", root=str(cub), fixations=(str(gaze_dir),), mixer="gazemix",
                       batch_size=2))
    assert result["epoch"] == 1


def test_pretrained_path_skips_a_head_of_another_size(tmp_path):
    from safetensors.torch import save_file

    source = build_model("test_vit", 10, 32, patch_size=8)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"model": source.state_dict()}, tmp_path / "w.pth")
    for path in (tmp_path / "w.safetensors", tmp_path / "w.pth"):
        target = build_model("test_vit", K, 32, patch_size=8)
        left = load_pretrained(target, path)
        assert set(left) == {"head.weight", "head.bias"}
        torch.testing.assert_close(target.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    with pytest.raises(ModelError, match="shares no parameter"):
        load_pretrained(build_model("test_resnet", K, 32), tmp_path / "w.pth")
    with pytest.raises(ModelError, match="does not exist"):
        load_pretrained(build_model("test_vit", K, 32, patch_size=8), tmp_path / "missing.pt")
