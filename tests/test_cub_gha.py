"""CUB-GHA adapter: fixtures in the run-file and CUB-200-2011 formats, malformed inputs, real files."""

from pathlib import Path

import numpy as np
import pytest

from data_adapters.base import AdapterError
from data_adapters.cub_gha import OBSERVER_STRIDE, CubGha, observer_run, read_run_file

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL = SHARED / "data" / "cub_gha"


def write_runs(folder: Path, runs: dict[int, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for run, text in runs.items():
        (folder / f"Fixation_run{run}.txt").write_text(text)
    return folder


GOOD = {1: "2,50,40,10,20,300,49,39,120\n1,30,20,0,0,60\n2,50,40,11,21,200\n",
        2: "2,50,40,5,6,700\n"}


def write_cub(root: Path, labels: str = "1 3\n2 1\n") -> Path:
    root.mkdir(parents=True)
    (root / "images").mkdir()
    (root / "images.txt").write_text("1 003.Sooty_Albatross/a.jpg\n2 001.Black_footed_Albatross/b.jpg\n")
    (root / "image_class_labels.txt").write_text(labels)
    (root / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n3 003.Sooty_Albatross\n")
    (root / "train_test_split.txt").write_text("1 1\n2 0\n")
    (root / "bounding_boxes.txt").write_text("1 1.0 2.0 20.0 15.0\n2 3.5 4.0 30.0 20.0\n")
    return root


def test_lines_are_grouped_by_image_across_lines_and_runs(tmp_path):
    data = CubGha(write_runs(tmp_path, GOOD))
    assert [s.image_id for s in data] == ["1", "2"] and len(data) == 2
    two = data[1]
    assert two.size == (40, 50) and two.label is None and two.image_path is None
    assert two.meta == {"runs": [1, 2], "n_lines": 3}
    np.testing.assert_array_equal(two.fixations.x, [10, 49, 11, 5])
    np.testing.assert_array_equal(two.fixations.y, [20, 39, 21, 6])
    np.testing.assert_array_equal(two.fixations.duration_ms, [300, 120, 200, 700])
    np.testing.assert_array_equal(two.fixations.observer, [OBSERVER_STRIDE + 1] * 2 + [OBSERVER_STRIDE + 3, 2 * OBSERVER_STRIDE + 1])
    np.testing.assert_array_equal(observer_run(two.fixations.observer), [1, 1, 1, 2])
    assert [s.image_id for s in CubGha(tmp_path, runs=(2,))] == ["2"]


def test_data_5runs_parent_folder_is_accepted(tmp_path):
    write_runs(tmp_path / "data_5runs", GOOD)
    assert len(CubGha(tmp_path)) == 2


@pytest.mark.parametrize("line, field, message", [
    ("2,50,40,10,20,300,49,39", None, "8 fields"),             # truncated line
    ("2,50,40,10,2x,300", "y1", "'2x' is not an integer"),      # non-integer field
    ("2,50,40,10,20,300,50,5,100", "x2", "outside the 50x40 image"),  # x == width
    ("2,50,40,10,40,300", "y1", "outside"),                     # y == height
    ("2,50,40,10,20,0", "d1", "duration must be positive"),
    ("0,50,40,10,20,100", "image_id", "1-based"),
])
def test_malformed_line_names_file_line_and_field(tmp_path, line, field, message):
    write_runs(tmp_path, {1: f"1,30,20,0,0,60\n{line}\n1,30,20,1,1,70\n"})
    with pytest.raises(AdapterError, match=message) as err:
        CubGha(tmp_path)
    assert err.value.line == 2 and err.value.field == field and err.value.path.endswith("Fixation_run1.txt")
    assert "Fixation_run1.txt, line 2" in str(err.value)
    data = CubGha(tmp_path, on_error="skip")  # the bad line is skipped and counted; the rest survives
    assert len(data.skipped) == 1 and data.skip_counts() == {"Fixation_run1.txt": 1}
    assert len(data[0].fixations) == 2


def test_empty_and_missing_files(tmp_path):
    write_runs(tmp_path, {1: "\n"})
    with pytest.raises(AdapterError, match="empty"):
        CubGha(tmp_path)
    with pytest.raises(AdapterError, match="Fixation_run3.txt.*missing"):
        CubGha(tmp_path, runs=(3,))
    with pytest.raises(AdapterError, match="no Fixation_run"):
        CubGha(write_runs(tmp_path / "none", {}))
    with pytest.raises(AdapterError, match="not found"):
        CubGha(tmp_path / "absent")


def test_size_contradicting_an_earlier_line(tmp_path):
    write_runs(tmp_path, {1: "2,50,40,1,1,100\n2,40,50,1,1,100\n"})
    with pytest.raises(AdapterError, match="line 2.*image 2 is 40x50 here but 50x40"):
        CubGha(tmp_path)
    assert len(CubGha(tmp_path, on_error="skip").skipped) == 1


def test_cub_metadata_adds_label_class_split_box_and_path(tmp_path):
    cub = write_cub(tmp_path / "CUB_200_2011")
    data = CubGha(write_runs(tmp_path / "gha", GOOD), tmp_path)  # the parent of CUB_200_2011 works too
    one, two = data
    assert data.class_names == ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    assert one.label == 2 and one.meta["class_name"] == "Sooty_Albatross" and one.meta["split"] == "train"
    assert two.label == 0 and two.meta["split"] == "test" and two.meta["bbox_xywh"] == (3.5, 4.0, 30.0, 20.0)
    assert one.image_path == str(cub / "images" / "003.Sooty_Albatross" / "a.jpg")
    assert [s.image_id for s in CubGha(tmp_path / "gha", cub, split="test")] == ["2"]
    with pytest.raises(ValueError, match="split= needs"):
        CubGha(tmp_path / "gha", split="train")


def test_labels_without_images_folder(tmp_path):
    cub = write_cub(tmp_path / "cub")
    (cub / "images").rmdir()
    (cub / "images.txt").unlink()
    data = CubGha(write_runs(tmp_path / "gha", GOOD), cub)
    assert [s.label for s in data] == [2, 0] and all(s.image_path is None for s in data)


def test_image_id_with_no_label(tmp_path):
    cub = write_cub(tmp_path / "cub", labels="1 3\n")
    write_runs(tmp_path / "gha", GOOD)
    with pytest.raises(AdapterError, match="image id 2 .* has no label") as err:
        CubGha(tmp_path / "gha", cub)
    assert err.value.path.endswith("image_class_labels.txt")
    data = CubGha(tmp_path / "gha", cub, on_error="skip")
    assert [s.image_id for s in data] == ["1"] and len(data.skipped) == 1


def test_malformed_metadata_line(tmp_path):
    cub = write_cub(tmp_path / "cub", labels="1 3\n2 one\n")
    with pytest.raises(AdapterError, match="image_class_labels.txt, line 2, field 'class_id'"):
        CubGha(write_runs(tmp_path / "gha", GOOD), cub)
    (cub / "image_class_labels.txt").write_text("1 3 7\n")
    with pytest.raises(AdapterError, match="line 1: 3 fields, expected 2"):
        CubGha(tmp_path / "gha", cub)


def test_read_run_file_direct(tmp_path):
    rows = read_run_file(write_runs(tmp_path, GOOD) / "Fixation_run1.txt", 1)
    assert [r[0] for r in rows] == [2, 1, 2] and rows[0][1] == (40, 50) and len(rows[0][2]) == 2


@pytest.mark.skipif(not REAL.exists(), reason="../shared/data/cub_gha (real CUB-GHA files) is absent")
def test_real_cub_gha_counts():
    data = CubGha(REAL)
    assert len(data) == 11788 and not data.skipped
    assert sum(s.meta["n_lines"] for s in data) == 58489
    fx = [s.fixations for s in data]
    assert sum(len(f) for f in fx) == 442629
    dur = np.concatenate([f.duration_ms for f in fx])
    assert dur.min() == 60 and dur.max() == 9363
    assert {int(s.image_id) for s in data} == set(range(1, 11789))
    assert all((f.x < s.size[1]).all() and (f.y < s.size[0]).all() for f, s in zip(fx, data))
    run1 = CubGha(REAL, runs=(1,))
    assert len(run1) == 10556 and sum(s.meta["n_lines"] for s in run1) == 11634
