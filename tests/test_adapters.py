"""Fixture tests of the SALICON, MIT1003, CAT2000, COCO-Search18 and image-folder adapters.

Every fixture is a few lines or a small array written to ``tmp_path`` in the data set's own layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from data_adapters.base import AdapterError
from data_adapters.cat2000 import Cat2000
from data_adapters.coco_search18 import TASKS, CocoSearch18
from data_adapters.folder import FolderGaze
from data_adapters.mit1003 import Mit1003, detect_fixations
from data_adapters.salicon import SaliconFixations


def save_image(path: Path, h: int, w: int, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)
    return path


def save_gray(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


# ------------------------------------------------------------------------------------------- SALICON
def salicon_json(path: Path, annotations: list, images: list | None = None) -> Path:
    images = images if images is not None else [
        {"id": 7, "file_name": "COCO_val2014_000000000007.jpg", "height": 48, "width": 64},
        {"id": 9, "file_name": "COCO_val2014_000000000009.jpg", "height": 48, "width": 64}]
    path.write_text(json.dumps({"info": {}, "type": "fixations", "licenses": [], "images": images,
                                "annotations": annotations}))
    return path


def test_salicon_yx_one_based_to_zero_based(tmp_path):
    path = salicon_json(tmp_path / "fix.json", [
        {"id": 1, "image_id": 7, "worker_id": 3, "fixations": [[1, 1], [48, 64], [10, 20]]},
        {"id": 2, "image_id": 7, "worker_id": 5, "fixations": [[2, 30]]}])
    samples = {s.image_id: s for s in SaliconFixations(path)}
    s = samples["7"]
    assert s.size == (48, 64) and s.label is None and s.image_path is None
    np.testing.assert_array_equal(s.fixations.x, [0, 63, 19, 29])  # col - 1
    np.testing.assert_array_equal(s.fixations.y, [0, 47, 9, 1])  # row - 1
    np.testing.assert_array_equal(s.fixations.observer, [3, 3, 3, 5])
    assert np.isnan(s.fixations.duration_ms).all() and s.meta["workers"] == 2
    assert len(samples["9"].fixations) == 0  # no annotation: yielded empty, the map policy decides


def test_salicon_old_xy_order_and_image_dir(tmp_path):
    path = salicon_json(tmp_path / "fix.json", [{"id": 1, "image_id": 9, "worker_id": 1, "fixations": [[60.5, 40.0]]}])
    for name in ("COCO_val2014_000000000007.jpg", "COCO_val2014_000000000009.jpg"):
        save_image(tmp_path / "img" / name, 48, 64)
    s = [s for s in SaliconFixations(path, order="xy", images_dir=tmp_path / "img") if s.image_id == "9"][0]
    assert (s.fixations.x[0], s.fixations.y[0]) == (59.5, 39.0)
    assert Path(s.image_path).name == "COCO_val2014_000000000009.jpg"
    # the same points read as [y, x] fall outside the 64x48 image: the wrong order shows itself
    with pytest.raises(AdapterError, match=r"annotations\[0\]\.fixations.*outside the 64x48 image"):
        list(SaliconFixations(path))


def test_salicon_fixation_outside_image_raises_or_is_counted(tmp_path):
    path = salicon_json(tmp_path / "fix.json", [
        {"id": 1, "image_id": 7, "worker_id": 1, "fixations": [[49, 10]]},  # row 49 > height 48
        {"id": 2, "image_id": 7, "worker_id": 2, "fixations": [[5, 5]]}])
    with pytest.raises(AdapterError, match=r"fix\.json, field 'annotations\[0\]\.fixations'.*outside"):
        list(SaliconFixations(path))
    adapter = SaliconFixations(path, on_error="skip")
    s = [s for s in adapter if s.image_id == "7"][0]
    assert len(adapter.skipped) == 1 and s.fixations.observer.tolist() == [2]


def test_salicon_malformed_records(tmp_path):
    non_number = salicon_json(tmp_path / "a.json", [{"id": 1, "image_id": 7, "worker_id": 1, "fixations": [[5, "x"]]}])
    with pytest.raises(AdapterError, match=r"annotations\[0\]\.fixations.*entry 0 is \[5, 'x'\]"):
        list(SaliconFixations(non_number))
    no_image = salicon_json(tmp_path / "b.json", [{"id": 1, "image_id": 99, "worker_id": 1, "fixations": [[5, 5]]}])
    with pytest.raises(AdapterError, match=r"image_id 99, which has no entry in 'images'"):
        list(SaliconFixations(no_image))
    bad_worker = salicon_json(tmp_path / "c.json", [{"id": 1, "image_id": 7, "worker_id": "w1", "fixations": []}])
    with pytest.raises(AdapterError, match=r"field 'annotations\[0\]\.worker_id'"):
        list(SaliconFixations(bad_worker))
    bad_size = salicon_json(tmp_path / "d.json", [], images=[{"id": 1, "file_name": "a.jpg", "height": 4.5, "width": 8}])
    with pytest.raises(AdapterError, match=r"images\[0\]\.height"):
        list(SaliconFixations(bad_size))


def test_salicon_truncated_and_empty_files(tmp_path):
    full = salicon_json(tmp_path / "full.json", [{"id": 1, "image_id": 7, "worker_id": 1, "fixations": [[5, 5]]}])
    truncated = tmp_path / "truncated.json"
    truncated.write_text(full.read_text()[:-20])
    with pytest.raises(AdapterError, match=r"truncated\.json, line 1: not valid JSON.*truncated"):
        list(SaliconFixations(truncated))
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(AdapterError, match="empty.json: the file is empty"):
        list(SaliconFixations(empty))
    with pytest.raises(AdapterError, match="missing.json: missing JSON file"):
        list(SaliconFixations(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="order must be"):
        SaliconFixations(full, order="rc")


def test_salicon_missing_image_file_named(tmp_path):
    path = salicon_json(tmp_path / "fix.json", [])
    save_image(tmp_path / "img" / "COCO_val2014_000000000007.jpg", 48, 64)
    with pytest.raises(AdapterError, match="COCO_val2014_000000000009.jpg: missing image of SALICON image 9"):
        list(SaliconFixations(path, images_dir=tmp_path / "img"))
    adapter = SaliconFixations(path, images_dir=tmp_path / "img", on_error="skip")
    assert [s.image_id for s in adapter] == ["7"] and len(adapter.skipped) == 1


# ------------------------------------------------------------------------------------- COCO-Search18
def trial(**kw) -> dict:
    t = {"name": "000000478726.jpg", "subject": 1, "task": "bottle", "condition": "present",
         "bbox": [1063, 68, 95, 242], "X": [840.0, 1100.5, 1120.0], "Y": [525.0, 150.0, 160.0],
         "T": [200, 311, 250], "length": 3, "correct": 1, "RT": 1100, "split": "train"}
    t.update(kw)
    return t


def write_trials(path: Path, trials: list) -> Path:
    path.write_text(json.dumps(trials, indent=1))
    return path


def test_coco_search18_groups_subjects_and_labels_task(tmp_path):
    path = write_trials(tmp_path / "tp.json", [trial(), trial(subject=2, X=[840.0, 10.0], Y=[525.0, 20.0], T=[100, 90],
                                                                 length=2), trial(task="tv", subject=1)])
    samples = list(CocoSearch18(path))
    assert [(s.image_id, s.meta["task"]) for s in samples] == [("000000478726.jpg", "bottle"), ("000000478726.jpg", "tv")]
    s = samples[0]
    assert s.size == (1050, 1680) and s.label == TASKS.index("bottle") == 0 and samples[1].label == 17
    # the initial centre fixation of each trial is dropped; the rest kept with durations and subjects
    np.testing.assert_array_equal(s.fixations.x, [1100.5, 1120.0, 10.0])
    np.testing.assert_array_equal(s.fixations.duration_ms, [311, 250, 90])
    np.testing.assert_array_equal(s.fixations.observer, [1, 1, 2])
    assert s.meta["bbox"] == [1063, 68, 95, 242] and s.meta["subjects"] == [1, 2] and s.meta["rt_ms"] == [1100, 1100]
    kept = list(CocoSearch18(path, drop_initial=False))[0]
    assert len(kept.fixations) == 5 and kept.fixations.x[0] == 840.0


def test_coco_search18_images_dir_layout(tmp_path):
    path = write_trials(tmp_path / "tp.json", [trial()])
    save_image(tmp_path / "images" / "bottle" / "000000478726.jpg", 8, 8)
    s = next(iter(CocoSearch18(path, images_dir=tmp_path / "images")))
    assert s.image_path.endswith("bottle/000000478726.jpg")
    with pytest.raises(AdapterError, match="missing image '000000478726.jpg' of task 'bottle'"):
        list(CocoSearch18(path, images_dir=tmp_path / "elsewhere"))


def test_coco_search18_malformed_trials(tmp_path):
    cases = {
        "unknown task": (trial(task="giraffe"), r"task 'giraffe'.*no label"),
        "non-integer subject": (trial(subject="s1"), r"field '\[0\]\.subject'"),
        "non-number X": (trial(X=[840.0, "nan?", 3.0]), r"field '\[0\]\.X'.*entry 1 is 'nan\?'"),
        "outside": (trial(X=[840.0, 1700.0, 3.0]), r"outside the 1680x1050 image"),
        "ragged": (trial(T=[200, 311]), r"3 X, 3 Y and 2 T"),
        "truncated trial": (trial(length=9), r"says length 9 but lists 3 fixations"),
        "missing key": ({"name": "a.jpg", "subject": 1, "task": "cup", "X": [], "Y": []}, r"lacks 'T'"),
    }
    for name, (bad, message) in cases.items():
        path = write_trials(tmp_path / "bad.json", [bad, trial(subject=4)])
        with pytest.raises(AdapterError, match=message):
            list(CocoSearch18(path))
        adapter = CocoSearch18(path, on_error="skip")
        samples = list(adapter)
        assert len(adapter.skipped) == 1, name
        assert [s.meta["subjects"] for s in samples] == [[4]], name  # the good trial survives


def test_coco_search18_truncated_and_empty_files(tmp_path):
    path = write_trials(tmp_path / "tp.json", [trial(), trial(subject=2)])
    text = path.read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2])
    with pytest.raises(AdapterError, match=r"cut\.json, line \d+: not valid JSON"):
        list(CocoSearch18(cut))
    for content, message in (("", "the file is empty"), ("[]", "holds no trials"), ("{}", "expected a JSON list")):
        (tmp_path / "e.json").write_text(content)
        with pytest.raises(AdapterError, match=message):
            list(CocoSearch18(tmp_path / "e.json"))


# ------------------------------------------------------------------------------------------- CAT2000
def cat2000_tree(root: Path) -> None:
    for category, stems in (("Action", ("001", "002")), ("Art", ("001",))):
        for stem in stems:
            save_image(root / "Stimuli" / category / f"{stem}.jpg", 12, 20)
            save_gray(root / "FIXATIONMAPS" / category / f"{stem}.jpg", np.zeros((12, 20)))
            locs = np.zeros((12, 20), np.uint8)
            locs[3, 7] = locs[11, 0] = 1
            (root / "FIXATIONLOCS" / category).mkdir(parents=True, exist_ok=True)
            savemat(root / "FIXATIONLOCS" / category / f"{stem}.mat", {"fixLocs": locs})


def test_cat2000_reads_locations_maps_and_category_labels(tmp_path):
    cat2000_tree(tmp_path)
    samples = list(Cat2000(tmp_path))
    assert [s.image_id for s in samples] == ["Action/001", "Action/002", "Art/001"]
    assert [s.label for s in samples] == [0, 0, 1]
    s = samples[0]
    assert s.size == (12, 20) and s.gaze_map_path.endswith("FIXATIONMAPS/Action/001.jpg")
    assert sorted(zip(s.fixations.x.tolist(), s.fixations.y.tolist())) == [(0.0, 11.0), (7.0, 3.0)]  # col = x
    assert [s.image_id for s in Cat2000(tmp_path, categories=["Art"])] == ["Art/001"]


def test_cat2000_errors(tmp_path):
    cat2000_tree(tmp_path)
    (tmp_path / "FIXATIONMAPS" / "Action" / "002.jpg").unlink()
    savemat(tmp_path / "FIXATIONLOCS" / "Art" / "001.mat", {"fixLocs": np.zeros((5, 5))})
    with pytest.raises(AdapterError, match=r"FIXATIONMAPS/Action/002\.jpg: missing fixation map"):
        list(Cat2000(tmp_path))
    adapter = Cat2000(tmp_path, on_error="skip")
    assert [s.image_id for s in adapter] == ["Action/001"]
    assert len(adapter.skipped) == 2 and "fixLocs is (5, 5) but the image is (12, 20)" in str(adapter.skipped[1])
    (tmp_path / "FIXATIONLOCS" / "Action" / "001.mat").write_bytes(b"")
    with pytest.raises(AdapterError, match=r"Action/001\.mat: cannot read the \.mat file"):
        list(Cat2000(tmp_path, categories=["Action"]))
    with pytest.raises(ValueError, match=r"categories \['Nope'\]"):
        Cat2000(tmp_path, categories=["Nope"])
    test_set = tmp_path / "testSet"
    save_image(test_set / "Stimuli" / "Action" / "001.jpg", 4, 4)
    with pytest.raises(AdapterError, match="CAT2000 test set has no gaze"):
        Cat2000(test_set)
    with pytest.raises(AdapterError, match="missing folder"):
        Cat2000(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------- MIT1003
def saccade_trace(points: list[tuple[float, float]], dwell: int | list[int] = 120, travel: int = 8) -> np.ndarray:
    """Raw 240 Hz samples: dwell at each point, a straight fast saccade between points."""
    rng = np.random.default_rng(0)
    dwells = [dwell] * len(points) if isinstance(dwell, int) else dwell
    parts = []
    for i, ((x, y), n) in enumerate(zip(points, dwells)):
        parts.append(np.array([[x, y]] * n) + rng.normal(0, 0.3, (n, 2)))
        if i + 1 < len(points):
            t = np.linspace(0, 1, travel + 2)[1:-1, None]
            parts.append(np.array([x, y]) + t * (np.array(points[i + 1]) - np.array([x, y])))
    return np.vstack(parts)


def test_detect_fixations_finds_dwells_and_merges_short_ones():
    pts = [(500.0, 400.0), (100.0, 100.0), (900.0, 700.0)]
    pos, dur = detect_fixations(saccade_trace(pts))
    assert pos.shape == (3, 2)
    np.testing.assert_allclose(pos, pts, atol=1.0)
    assert ((dur > 400) & (dur <= 500)).all()  # 120 samples = 500 ms, less the saccade samples
    # a 10-sample (42 ms < 50 ms) stop between two saccades is merged into them: not a fixation
    short_stop = saccade_trace(pts, dwell=[120, 10, 120])
    assert len(detect_fixations(short_stop, min_fixation_ms=0)[0]) == 3
    pos, _ = detect_fixations(short_stop)
    assert len(pos) == 2
    np.testing.assert_allclose(pos, [pts[0], pts[2]], atol=1.0)
    blink = saccade_trace(pts[:1], dwell=200)
    blink[50:60] = -1
    pos, dur = detect_fixations(blink)
    assert pos.shape == (1, 2) and dur[0] == pytest.approx(1000 * 200 / 240)


def mit_tree(root: Path, *, subjects=("ajs", "hp")) -> None:
    save_image(root / "ALLSTIMULI" / "i1.jpeg", 600, 1000)
    fix_pts = np.zeros((600, 1000))
    fix_pts[100:102, 200:202] = 255
    save_gray(root / "ALLFIXATIONMAPS" / "i1_fixPts.jpg", fix_pts)
    save_gray(root / "ALLFIXATIONMAPS" / "i1_fixMap.jpg", np.zeros((600, 1000)))
    traces = {"ajs": [(500.0, 300.0), (101.0, 201.0), (900.0, 500.0)],
              "hp": [(500.0, 300.0), (1200.0, 50.0), (300.0, 301.0)]}  # 1200 lies off the 1000-px image
    for s in subjects:
        (root / "DATA" / s).mkdir(parents=True, exist_ok=True)
        savemat(root / "DATA" / s / "i1.mat", {"i1": {"imgName": "i1.jpeg", "DATA": {"eyeData": saccade_trace(traces[s])}}})


def test_mit1003_observers_are_zero_based_without_the_first_fixation(tmp_path):
    mit_tree(tmp_path)
    s = next(iter(Mit1003(tmp_path)))
    assert s.size == (600, 1000) and s.label is None and s.meta["subjects"] == ["ajs", "hp"]
    assert s.gaze_map_path.endswith("i1_fixMap.jpg")
    got = sorted(zip(np.round(s.fixations.x).tolist(), np.round(s.fixations.y).tolist(), s.fixations.observer.tolist()))
    assert got == [(100.0, 200.0, 0), (299.0, 300.0, 1), (899.0, 499.0, 0)]  # 1-based -> 0-based, start dropped
    assert s.meta["dropped_outside"] == 1  # hp's fixation at x=1200 is off the image
    assert len(next(iter(Mit1003(tmp_path, drop_first=False))).fixations) == 5


def test_mit1003_points_source_and_errors(tmp_path):
    mit_tree(tmp_path)
    s = next(iter(Mit1003(tmp_path, source="points")))
    assert set(zip(s.fixations.x.tolist(), s.fixations.y.tolist())) >= {(200.0, 100.0), (201.0, 101.0)}
    assert (s.fixations.observer == -1).all()
    (tmp_path / "DATA" / "hp" / "i1.mat").unlink()
    with pytest.raises(AdapterError, match=r"hp/i1\.mat: missing eye data of subject 'hp'"):
        list(Mit1003(tmp_path))
    adapter = Mit1003(tmp_path, on_error="skip")
    s = next(iter(adapter))
    assert len(adapter.skipped) == 1 and set(s.fixations.observer.tolist()) == {0}
    savemat(tmp_path / "DATA" / "ajs" / "i1.mat", {"i1": {"DATA": {"eyeData": np.zeros(5)}}})
    with pytest.raises(AdapterError, match=r"field 'i1\.DATA\.eyeData'"):
        list(Mit1003(tmp_path, subjects=["ajs"]))
    with pytest.raises(ValueError, match=r"subjects \['zz'\]"):
        Mit1003(tmp_path, subjects=["zz"])
    with pytest.raises(AdapterError, match="ALLSTIMULI"):
        Mit1003(tmp_path / "nowhere")


# -------------------------------------------------------------------------------------- image folder
def folder_tree(root: Path) -> None:
    save_image(root / "cat" / "a.jpg", 10, 16)
    save_gray(root / "cat" / "a.png", np.zeros((10, 16)))
    save_image(root / "dog" / "b.jpg", 10, 16)
    (root / "dog" / "b.csv").write_text("x,y,duration_ms,observer\n0,0,120,1\n15.4,-0.5,80,2\n")


def test_folder_reads_maps_csvs_and_labels(tmp_path):
    folder_tree(tmp_path)
    adapter = FolderGaze(tmp_path)
    a, b = list(adapter)
    assert adapter.classes == ["cat", "dog"] and (a.label, b.label) == (0, 1)
    assert a.image_id == "cat/a" and a.gaze_map_path.endswith("a.png") and a.fixations is None
    assert b.size == (10, 16) and b.gaze_map_path is None
    np.testing.assert_array_equal(b.fixations.x, [0, 15.4])
    np.testing.assert_array_equal(b.fixations.y, [0, -0.5])
    np.testing.assert_array_equal(b.fixations.duration_ms, [120, 80])
    np.testing.assert_array_equal(b.fixations.observer, [1, 2])
    (tmp_path / "dog" / "b.csv").write_text("y,x\n2,3\n")  # optional columns absent, any order
    b = list(FolderGaze(tmp_path))[1]
    assert (b.fixations.x[0], b.fixations.y[0]) == (3.0, 2.0) and np.isnan(b.fixations.duration_ms[0])
    assert b.fixations.observer[0] == -1


@pytest.mark.parametrize("csv_text, message", [
    ("x,y,duration_ms\n1,2,30\n3,4\n", r"b\.csv, line 3: has 2 fields but the header has 3 \(truncated line\?\)"),
    ("x,y,observer\n1,2,3\n1,2,p7\n", r"b\.csv, line 3, field 'observer': 'p7' is not an integer"),
    ("x,y\n1,2\nabc,2\n", r"b\.csv, line 3, field 'x': 'abc' is not a number"),
    ("x,y\n1,2\n16,2\n", r"b\.csv, line 3: fixation 0 at \(x=16, y=2\).*outside the 16x10 image"),
    ("x,y\n1,2\n-0.6,2\n", r"line 3: .*outside"),  # integers are pixel centres: the image spans [-0.5, 15.5)
    ("x,y\n1,2\n2,9.5\n", r"line 3: .*outside"),
    ("x,y,duration_ms\n1,2,3\n1,2,-5\n", r"line 3, field 'duration_ms': negative duration"),
])
def test_folder_bad_csv_line_raises_or_is_skipped(tmp_path, csv_text, message):
    folder_tree(tmp_path)
    (tmp_path / "dog" / "b.csv").write_text(csv_text)
    with pytest.raises(AdapterError, match=message):
        list(FolderGaze(tmp_path))
    adapter = FolderGaze(tmp_path, on_error="skip")
    b = list(adapter)[1]
    assert len(adapter.skipped) == 1 and len(b.fixations) == 1  # the good line is kept


def test_folder_file_level_errors(tmp_path):
    folder_tree(tmp_path)
    (tmp_path / "dog" / "b.csv").write_text("")
    with pytest.raises(AdapterError, match=r"b\.csv: the file is empty"):
        list(FolderGaze(tmp_path))
    (tmp_path / "dog" / "b.csv").write_text("x,z\n1,2\n")
    with pytest.raises(AdapterError, match=r"b\.csv, line 1: header \['x', 'z'\] must name"):
        list(FolderGaze(tmp_path))
    (tmp_path / "dog" / "b.csv").unlink()
    with pytest.raises(AdapterError, match=r"b\.jpg: has no gaze: expected b\.png \(map\) or b\.csv"):
        list(FolderGaze(tmp_path))
    save_gray(tmp_path / "dog" / "b.png", np.zeros((5, 5)))
    with pytest.raises(AdapterError, match=r"b\.png: gaze map is \(5, 5\) but its image is \(10, 16\)"):
        list(FolderGaze(tmp_path))
    save_image(tmp_path / "stray.jpg", 4, 4)
    adapter = FolderGaze(tmp_path, on_error="skip")
    assert [s.image_id for s in adapter] == ["cat/a"]
    assert len(adapter.skipped) == 2 and "stray.jpg: lies directly in the root folder, so it has no label" in str(adapter.skipped[0])
    with pytest.raises(ValueError, match="map_suffix '.png'"):
        FolderGaze(tmp_path, image_suffixes=(".png",))


def test_folder_png_images_with_gaze_suffix(tmp_path):
    save_gray(tmp_path / "c" / "x.png", np.zeros((6, 7)))
    save_gray(tmp_path / "c" / "x_gaze.png", np.zeros((6, 7)))
    samples = list(FolderGaze(tmp_path, image_suffixes=(".png",), map_suffix="_gaze.png"))
    assert [s.image_id for s in samples] == ["c/x"] and samples[0].gaze_map_path.endswith("x_gaze.png")


def test_policy_argument_is_checked(tmp_path):
    folder_tree(tmp_path)
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
        FolderGaze(tmp_path, on_error="ignore")
