"""Fixture tests of the OSIE adapter (``data_adapters.osie``), and its counts on the real release in ../shared.

Every fixture is written to ``tmp_path`` in the release's own layout with ``scipy.io.savemat``: the eye file
as a cell array of structs (as ``fixations.mat`` is), the mouse files as one struct of arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from data_adapters.base import AdapterError, Fixations
from data_adapters.osie import Osie, available_sources, distinct_points
from tests.conftest import SHARED, needs_shared

H, W = 30, 40


def cell(items: list) -> np.ndarray:
    """A MATLAB cell array (1 x n) of the given values (dicts become structs)."""
    out = np.empty((1, len(items)), dtype=object)
    for k, v in enumerate(items):
        out[0, k] = v
    return out


def subject(x, y, d) -> dict:
    return {"fix_x": np.asarray(x, dtype=float), "fix_y": np.asarray(y, dtype=float), "fix_duration": np.asarray(d)}


def good_eye() -> list[dict]:
    return [
        {"img": "1001.jpg", "subjects": cell([subject([1, 40, 20.5], [1, 30, 10.5], [100, 200, 300]),
                                              subject([5.0], [6.0], [120])])},  # one fixation: scalars on load
        {"img": "1002.jpg", "subjects": cell([subject([2, 3], [4, 5], [50, 60]), subject([7], [8], [70])])},
    ]


def save_eye(root: Path, entries: list[dict]) -> Path:
    path = root / "data" / "eye" / "fixations.mat"
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"fixations": cell(entries)})
    return path


def save_mouse(root: Path, stem: str, subj, order, coord, source: str = "mouse_lab", name: str = "fixations") -> Path:
    path = root / "data" / source / f"{stem}.mat"
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {name: {"subj": np.asarray(subj, np.uint8), "order": np.asarray(order, np.uint8),
                          "coord": np.asarray(coord, np.uint16)}})
    return path


def osie_tree(root: Path) -> Path:
    for stem in ("1001", "1002"):
        path = root / "data" / "stimuli" / f"{stem}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(path)
    save_eye(root, good_eye())
    # subject 1: centre start, a repeated pixel; subject 3: one sample; stored out of order
    save_mouse(root, "1001", [1, 1, 1, 1, 3], [1, 3, 2, 4, 1], [[15, 20], [30, 40], [1, 1], [30, 40], [15, 20]])
    save_mouse(root, "1002", [2, 2], [1, 2], [[2, 3], [4, 5]])
    return root


# -------------------------------------------------------------------------------------------- reading
def test_eye_is_zero_based_with_observers_and_durations(tmp_path):
    osie_tree(tmp_path)
    a, b = list(Osie(tmp_path))
    assert (a.image_id, a.size, a.label) == ("1001", (H, W), None)
    assert a.image_path.endswith("stimuli/1001.jpg") and a.meta["source"] == "eye" and a.meta["n_observers"] == 2
    np.testing.assert_allclose(a.fixations.x, [0, 39, 19.5, 4])  # fix_x - 1; the corner pixel (40, 30) is inside
    np.testing.assert_allclose(a.fixations.y, [0, 29, 9.5, 5])
    np.testing.assert_array_equal(a.fixations.duration_ms, [100, 200, 300, 120])
    np.testing.assert_array_equal(a.fixations.observer, [0, 0, 0, 1])
    assert len(b.fixations) == 3 and b.fixations.observer.tolist() == [0, 0, 1]
    assert [s.image_id for s in Osie(tmp_path / "data", images=["1002"])] == ["1002"]  # data/ itself works too


def test_mouse_row_column_to_xy_sorted_by_order_and_deduplicated(tmp_path):
    osie_tree(tmp_path)
    s = next(iter(Osie(tmp_path, source="mouse_lab")))
    # subject 1 in sample order: (15,20), (1,1), (30,40), (30,40) -> distinct pixels once; subject 3 one sample
    assert list(zip(s.fixations.x.tolist(), s.fixations.y.tolist(), s.fixations.observer.tolist())) == [
        (19.0, 14.0, 0), (0.0, 0.0, 0), (39.0, 29.0, 0), (19.0, 14.0, 2)]
    assert np.isnan(s.fixations.duration_ms).all() and s.meta["n_observers"] == 2
    every = next(iter(Osie(tmp_path, source="mouse_lab", mouse_points="all")))
    assert len(every.fixations) == 5
    # the release marks each distinct pixel of the image once, over all subjects
    union = distinct_points(s.fixations)
    assert sorted(zip(union.x.tolist(), union.y.tolist())) == [(0.0, 0.0), (19.0, 14.0), (39.0, 29.0)]
    assert len(distinct_points(Fixations.empty())) == 0


def test_available_sources_and_options(tmp_path):
    osie_tree(tmp_path)
    assert available_sources(tmp_path) == ["eye", "mouse_lab"]
    assert available_sources(tmp_path / "data") == ["eye", "mouse_lab"]
    with pytest.raises(AdapterError, match=r"data/mouse_amt: missing folder"):
        Osie(tmp_path, source="mouse_amt")
    with pytest.raises(ValueError, match="source must be one of"):
        Osie(tmp_path, source="clicks")
    with pytest.raises(ValueError, match="mouse_points"):
        Osie(tmp_path, mouse_points="some")
    with pytest.raises(ValueError, match=r"images \['9'\]"):
        Osie(tmp_path, images=["9"])
    with pytest.raises(ValueError, match="on_error"):
        Osie(tmp_path, on_error="ignore")


# ---------------------------------------------------------------------------------------- bad input
def test_missing_folders_and_files(tmp_path):
    with pytest.raises(AdapterError, match=r"data/stimuli: missing folder"):
        Osie(tmp_path / "nowhere")
    osie_tree(tmp_path)
    (tmp_path / "data" / "eye" / "fixations.mat").unlink()
    with pytest.raises(AdapterError, match=r"eye/fixations\.mat: missing OSIE eye data"):
        Osie(tmp_path)
    (tmp_path / "data" / "mouse_lab" / "1002.mat").unlink()
    with pytest.raises(AdapterError, match=r"mouse_lab/1002\.mat: missing mouse_lab data of image 1002"):
        list(Osie(tmp_path, source="mouse_lab"))
    adapter = Osie(tmp_path, source="mouse_lab", on_error="skip")
    assert [s.image_id for s in adapter] == ["1001"] and len(adapter.skipped) == 1


@pytest.mark.parametrize("cut", [0, 0.5])
def test_corrupt_mat_files(tmp_path, cut):
    osie_tree(tmp_path)
    eye = tmp_path / "data" / "eye" / "fixations.mat"
    content = eye.read_bytes()[:int(cut * eye.stat().st_size)]  # empty, or truncated halfway
    eye.write_bytes(content)
    with pytest.raises(AdapterError, match=r"fixations\.mat: cannot read the \.mat file"):
        list(Osie(tmp_path, on_error="skip"))  # the whole eye file is unreadable: always an error
    (tmp_path / "data" / "mouse_lab" / "1001.mat").write_bytes(content)
    with pytest.raises(AdapterError, match=r"mouse_lab/1001\.mat: cannot read the \.mat file"):
        list(Osie(tmp_path, source="mouse_lab"))
    adapter = Osie(tmp_path, source="mouse_lab", on_error="skip")
    assert [s.image_id for s in adapter] == ["1002"] and "cannot read" in str(adapter.skipped[0])


def eye_with(tmp_path: Path, k: int, j: int | None = None, **fields) -> None:
    """The good eye file with image ``k``'s subject ``j`` (or the entry itself) replaced/extended by ``fields``."""
    entries = good_eye()
    if j is None:
        entries[k] = fields
    else:
        subs = list(entries[k]["subjects"][0])
        subs[j] = fields
        entries[k]["subjects"] = cell(subs)
    save_eye(tmp_path, entries)


@pytest.mark.parametrize("entry_subject, fields, field, message", [
    ((0, 1), {"fix_x": np.array([5.0]), "fix_y": np.array([6.0])}, r"fixations\{1\}\.subjects\{2\}\.fix_duration",
     "missing field"),
    ((0, 0), subject([1, 2], [1], [10, 20]), r"fixations\{1\}\.subjects\{1\}\.fix_y", "1 values but fix_x has 2"),
    ((0, 0), subject(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2))), r"fixations\{1\}\.subjects\{1\}\.fix_x",
     r"expected a vector, got shape \(2, 2\)"),
    ((0, 0), subject([1, 41.6], [1, 2], [10, 20]), r"fixations\{1\}\.subjects\{1\}\.fix_x/fix_y",
     r"fixation 1 at \(x=40\.6, y=1\) \(0-based\) lies outside the 40x30 image"),
    ((0, 0), subject([1, 2], [0.2, 2], [10, 20]), r"fixations\{1\}\.subjects\{1\}\.fix_x/fix_y", "outside the 40x30"),
    ((0, 0), subject([1, np.nan], [1, 2], [10, 20]), r"fixations\{1\}\.subjects\{1\}\.fix_x",
     "entry 2 is nan, expected finite numbers"),
    ((0, 0), subject([1, 2], [1, 2], [10, -5]), r"fixations\{1\}\.subjects\{1\}\.fix_duration", "non-negative ms"),
    ((0, 0), subject([], [], []), r"fixations\{1\}\.subjects\{1\}\.fix_x", "the subject has no fixations"),
    ((0, 0), {"fix_x": "left", "fix_y": np.array([1.0]), "fix_duration": np.array([1])},
     r"fixations\{1\}\.subjects\{1\}\.fix_x", "expected numbers"),
])
def test_bad_eye_subject_raises_or_drops_that_subject(tmp_path, entry_subject, fields, field, message):
    osie_tree(tmp_path)
    eye_with(tmp_path, *entry_subject, **fields)
    with pytest.raises(AdapterError, match=rf"fixations\.mat, field '{field}': .*{message}"):
        list(Osie(tmp_path))
    adapter = Osie(tmp_path, on_error="skip")
    samples = list(adapter)
    assert [s.image_id for s in samples] == ["1001", "1002"] and len(adapter.skipped) == 1
    assert set(samples[0].fixations.observer.tolist()) == {1 - entry_subject[1]}  # only the other subject is left


def test_bad_eye_entries(tmp_path):
    osie_tree(tmp_path)
    eye_with(tmp_path, 1, None, img="1002.jpg")  # no 'subjects'
    with pytest.raises(AdapterError, match=r"field 'fixations\{2\}': must be a struct with fields 'img' and 'subjects'"):
        list(Osie(tmp_path))
    adapter = Osie(tmp_path, on_error="skip")
    assert [s.image_id for s in adapter] == ["1001"]
    assert "no entry for stimulus 1002.jpg" in str(adapter.skipped[-1])  # the stimulus then has no eye data
    entries = good_eye()
    entries[1]["img"] = "1001.jpg"
    save_eye(tmp_path, entries)
    with pytest.raises(AdapterError, match=r"field 'fixations\{2\}\.img': 1001\.jpg already has entry 1"):
        list(Osie(tmp_path))
    entries[1]["img"] = "9999.jpg"
    save_eye(tmp_path, entries)
    with pytest.raises(AdapterError, match=r"field 'fixations\{2\}\.img': 9999\.jpg is not in"):
        list(Osie(tmp_path))
    savemat(tmp_path / "data" / "eye" / "fixations.mat", {"fix": np.zeros(3)})
    with pytest.raises(AdapterError, match=r"field 'fixations': no variable 'fixations' \(found: fix\)"):
        list(Osie(tmp_path))
    eye_with(tmp_path, 0, None, img="1001.jpg", subjects=np.zeros((0,)))
    with pytest.raises(AdapterError, match=r"field 'fixations\{1\}\.subjects': no subjects"):
        list(Osie(tmp_path))


def test_single_fixation_subject_loads_as_scalars(tmp_path):
    """squeeze_me turns a one-fixation subject's arrays into Python scalars; they still read as one fixation."""
    osie_tree(tmp_path)
    s = list(Osie(tmp_path))[1]
    assert s.fixations.x[s.fixations.observer == 1].tolist() == [6.0]
    assert s.fixations.duration_ms[s.fixations.observer == 1].tolist() == [70.0]


@pytest.mark.parametrize("subj, order, coord, field, message", [
    ([1, 1], [1, 2], [[15, 20], [31, 4]], r"fixations\.coord \(subject 1\)", r"\(x=3, y=30\) \(0-based\) lies outside"),
    ([1, 1], [1, 2], [[0, 20], [3, 4]], r"fixations\.coord \(subject 1\)", "lies outside the 40x30 image"),
    ([1, 1], [1, 2], [[15, 41], [3, 4]], r"fixations\.coord \(subject 1\)", r"\(x=40, y=14\)"),
])
def test_mouse_points_outside_the_image(tmp_path, subj, order, coord, field, message):
    osie_tree(tmp_path)
    path = save_mouse(tmp_path, "1001", subj + [2], order + [1], coord + [[5, 5]])
    with pytest.raises(AdapterError, match=rf"1001\.mat, field '{field}': .*{message}"):
        list(Osie(tmp_path, source="mouse_lab"))
    adapter = Osie(tmp_path, source="mouse_lab", on_error="skip")
    s = next(iter(adapter))
    assert s.fixations.observer.tolist() == [1] and str(path) in str(adapter.skipped[0])


def test_bad_mouse_files(tmp_path):
    osie_tree(tmp_path)
    mouse = tmp_path / "data" / "mouse_lab"
    save_mouse(tmp_path, "1001", [1, 1], [1, 2], [[1, 2], [3, 4]], name="samples")
    with pytest.raises(AdapterError, match=r"1001\.mat, field 'fixations': expected a struct 'fixations' .*found: samples"):
        list(Osie(tmp_path, source="mouse_lab"))
    savemat(mouse / "1001.mat", {"fixations": {"subj": np.array([1]), "coord": np.array([[1, 2]])}})
    with pytest.raises(AdapterError, match=r"field 'fixations\.order': missing field"):
        list(Osie(tmp_path, source="mouse_lab"))
    save_mouse(tmp_path, "1001", [1, 1, 1], [1, 2], [[1, 2], [3, 4], [5, 6]])
    with pytest.raises(AdapterError, match=r"field 'fixations\.order': 2 values but coord has 3 rows"):
        list(Osie(tmp_path, source="mouse_lab"))
    save_mouse(tmp_path, "1001", [1, 1], [1, 2], [[1, 2, 3], [3, 4, 5]])
    with pytest.raises(AdapterError, match=r"field 'fixations\.coord': expected N x 2 \(row, column\) pixels, got shape \(2, 3\)"):
        list(Osie(tmp_path, source="mouse_lab"))
    save_mouse(tmp_path, "1001", [0, 1], [1, 2], [[1, 2], [3, 4]])
    with pytest.raises(AdapterError, match=r"field 'fixations\.subj': subject numbers are 1-based"):
        list(Osie(tmp_path, source="mouse_lab"))
    savemat(mouse / "1001.mat", {"fixations": {"subj": np.array([1, 1]), "order": np.array([1, 2]),
                                               "coord": np.array([[1.5, 2], [3, 4]])}})
    with pytest.raises(AdapterError, match=r"field 'fixations\.coord': row 1 is \[1\.5, 2\.0\], expected integer pixel"):
        list(Osie(tmp_path, source="mouse_lab"))
    savemat(mouse / "1001.mat", {"fixations": {"subj": np.zeros((0, 1)), "order": np.zeros((0, 1)),
                                               "coord": np.zeros((0, 2))}})
    with pytest.raises(AdapterError, match=r"field 'fixations\.coord': holds no mouse samples"):
        list(Osie(tmp_path, source="mouse_lab"))
    adapter = Osie(tmp_path, source="mouse_lab", on_error="skip")
    assert [s.image_id for s in adapter] == ["1002"] and len(adapter.skipped) == 1


def test_single_mouse_sample_loads_as_scalars(tmp_path):
    osie_tree(tmp_path)
    save_mouse(tmp_path, "1001", [4], [1], [[3, 7]])
    s = next(iter(Osie(tmp_path, source="mouse_lab")))
    assert (s.fixations.x.tolist(), s.fixations.y.tolist(), s.fixations.observer.tolist()) == ([6.0], [2.0], [3])


def test_unreadable_stimulus_is_named(tmp_path):
    osie_tree(tmp_path)
    (tmp_path / "data" / "stimuli" / "1002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(AdapterError, match=r"stimuli/1002\.jpg: cannot read the image header"):
        list(Osie(tmp_path))
    assert [s.image_id for s in Osie(tmp_path, on_error="skip")] == ["1001"]


# --------------------------------------------------------------------------------------- real release
@needs_shared
def test_real_osie_counts():
    root = SHARED / "data" / "osie"
    assert available_sources(root)[:2] == ["eye", "mouse_lab"]
    eye = Osie(root)
    samples = list(eye)
    assert not eye.skipped and len(samples) == 700
    assert samples[0].image_id == "1001" and samples[-1].image_id == "1700"
    assert {s.size for s in samples} == {(600, 800)}
    assert {s.meta["n_observers"] for s in samples} == {15}
    assert sum(len(s.fixations) for s in samples) == 98_321  # the README's count
    x = np.concatenate([s.fixations.x for s in samples])
    y = np.concatenate([s.fixations.y for s in samples])
    assert 0 <= x.min() and x.max() < 799.5 and 0 <= y.min() and y.max() < 599.5
    mouse = Osie(root, source="mouse_lab", images=["1001", "1700"])
    m = list(mouse)
    assert not mouse.skipped and [s.image_id for s in m] == ["1001", "1700"]
    assert all(10 <= s.meta["n_observers"] <= 16 for s in m)
    # every mouse subject starts with the cursor at the image centre: row 300, column 400 (1-based)
    first = m[0].fixations
    starts = [(first.x[first.observer == o][0], first.y[first.observer == o][0]) for o in np.unique(first.observer)]
    assert starts.count((399.0, 299.0)) >= len(starts) - 1
