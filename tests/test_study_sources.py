"""Studies built from photographs on disk: a folder of class sub-folders (with and without gaze) and
CUB-200-2011 with CUB-GHA fixations (a small synthetic copy of each layout)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from gazemix.cli import main
from gazemix.study import StudyInputError
from gazemix.study.analysis import load_tables
from gazemix.study.build import build_study

OPTS = dict(mixers=["mixup", "cutmix"], n=4, size=32, pool=9, checks=1, practice=1, repeats=0)


def _photo(path, h=40, w=50, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def _folder(root, gaze=False):
    for c, name in enumerate(("heron", "owl", "wren")):
        (root / name).mkdir(parents=True)
        for k in range(3):
            _photo(root / name / f"img{k}.jpg", seed=10 * c + k)
            if gaze:  # a gaze map beside each image (same size): a bright blob
                m = np.zeros((40, 50), np.uint8)
                m[10:20, 5 + 10 * k:15 + 10 * k] = 255
                Image.fromarray(m).save(root / name / f"img{k}.png")
    return root


def test_folder_study_with_and_without_gaze(tmp_path, capsys):
    plain = _folder(tmp_path / "plain")
    build_study(tmp_path / "p.sqlite", data="folder", root=plain, **OPTS)
    t = load_tables(tmp_path / "p.sqlite")
    assert set(t.items["class1"]) <= {"heron", "owl", "wren"} and t.items["gaze_lam"].isna().all()
    assert (t.items["height"] == 32).all()
    gazed = _folder(tmp_path / "gazed", gaze=True)
    build_study(tmp_path / "g.sqlite", data="folder", root=gazed, **OPTS)
    t = load_tables(tmp_path / "g.sqlite")
    assert t.items.loc[t.items["is_check"] == 0, "gaze_lam"].between(0, 1).all()  # the maps became gaze weights
    assert main(["study", "build", "--data", "folder", "--root", str(gazed), "--mixers", "mixup", "--pairs", "2",
                 "--img-size", "32", "--pool", "9", "--checks", "0", "--practice", "1", "--db",
                 str(tmp_path / "c.sqlite")]) == 0


def test_folder_bad_records_reported_and_over_threshold_refused(tmp_path, capsys):
    root = _folder(tmp_path / "f")
    (root / "owl" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(StudyInputError, match=r"1 of 10 records are unusable .*broken.jpg.*--max-bad-fraction"):
        build_study(tmp_path / "s.sqlite", data="folder", root=root, **{**OPTS, "pool": 10})
    notes = []
    build_study(tmp_path / "s.sqlite", data="folder", root=root, max_skipped=0.2, log=notes.append,
                **{**OPTS, "pool": 10})
    assert any("skipped 1 unreadable image" in n and "broken.jpg" in n for n in notes)
    with pytest.raises(StudyInputError, match="at least two class folders"):
        build_study(tmp_path / "e.sqlite", data="folder", root=tmp_path / "f" / "owl", **OPTS)


def _cub(tmp_path, n_per_class=4, missing=0):
    cub = tmp_path / "CUB_200_2011"
    (cub / "images").mkdir(parents=True)
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    (cub / "classes.txt").write_text("".join(f"{k + 1} {c}\n" for k, c in enumerate(classes)))
    images, labels, boxes, fixes = [], [], [], []
    i = 0
    for c, name in enumerate(classes):
        (cub / "images" / name).mkdir()
        for k in range(n_per_class):
            i += 1
            rel = f"{name}/{name.split('.')[1]}_{k}.jpg"
            if i > missing:
                _photo(cub / "images" / rel, 60, 80, seed=i)
            images.append(f"{i} {rel}\n")
            labels.append(f"{i} {c + 1}\n")
            boxes.append(f"{i} 10.0 5.0 30.0 20.0\n")
            fixes.append(f"{i},80,60,20,15,300,30,20,250,25,12,200\n")
    (cub / "images.txt").write_text("".join(images))
    (cub / "image_class_labels.txt").write_text("".join(labels))
    (cub / "bounding_boxes.txt").write_text("".join(boxes))
    gaze = tmp_path / "data_5runs"
    gaze.mkdir()
    (gaze / "Fixation_run1.txt").write_text("".join(fixes))
    return gaze, cub


def test_cub_study_photographs_gaze_and_boxes(tmp_path):
    gaze, cub = _cub(tmp_path)
    build_study(tmp_path / "cub.sqlite", data="cub-gha", fixations=gaze, root=cub, mode="click", fit="resize",
                **{**OPTS, "pool": 12})
    t = load_tables(tmp_path / "cub.sqlite")
    assert set(t.items["class1"]) <= {"Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"}
    assert t.items.loc[t.items["is_check"] == 0, "gaze_lam"].between(0, 1).all()
    (box,) = [json.loads(a)["box"] for a in t.items.loc[t.items["is_check"] == 1, "check_answer"]]
    # the bird's box x 10..40, y 5..25 of an 80 x 60 photograph, resized to 32 x 32
    assert box == [2, 4, 14, 16]
    with pytest.raises(StudyInputError, match="needs --fixations"):
        build_study(tmp_path / "x.sqlite", data="cub-gha", root=cub, **OPTS)


def test_cub_missing_images_counted_and_refused_over_threshold(tmp_path):
    gaze, cub = _cub(tmp_path, missing=3)
    with pytest.raises(StudyInputError, match=r"photographs listed but missing\): 3 of 12 records are unusable"):
        build_study(tmp_path / "m.sqlite", data="cub-gha", fixations=gaze, root=cub, **OPTS)
    notes = []
    build_study(tmp_path / "m.sqlite", data="cub-gha", fixations=gaze, root=cub, max_skipped=0.5, log=notes.append,
                **OPTS)
    assert any("3 of 12 listed photographs are missing" in n for n in notes)
