"""User errors of the main job end in one clear line (exit 2), never a traceback; bad data is named, not used."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from data_adapters.base import AdapterError, Fixations
from data_adapters.cub_gha import read_run_file
from gazemix.cli import main
from gazemix.gaze import render_gaze_maps

SMALL = ["--mixers", "mixup", "--pairs", "8", "--n-images", "8", "--img-size", "32", "--quiet"]


@pytest.mark.parametrize(("extra", "expected"), [
    (["--device", "tpu9"], "unknown device 'tpu9'"),
    (["--worst", "-1"], "--worst must be at least 0"),
    (["--pairs", "0"], "--pairs must be at least 1"),
    (["--img-size", "100000"], "--img-size 100000 is larger than 4096"),
    (["--checkpoint", "/nope.pth", "--model", "resnet18"], "--checkpoint /nope.pth: no such file"),
    (["--checkpoint", "/nope.pth"], "--checkpoint needs --model"),
    (["--mixers", ","], "no mixer named"),
    (["--mixer-opt", "mixup.nonsense=3"], "mixup cannot be built with nonsense=3"),
    (["--mixer-opt", "cutmix.alpha=2"], "options were given for mixers that are not scored: cutmix"),
    (["--data", "cub-gha"], "--fixations: the cub-gha data set needs fixations"),
    (["--data", "folder"], "--root: the folder data set needs root"),
    (["--max-bad-fraction", "2"], "--max-bad-fraction must be between 0 and 1"),
])
def test_score_user_errors_are_one_line(tmp_path, capsys, extra, expected):
    rc = main(["score", *SMALL, "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("gazemix score: error:")]
    assert len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_score_out_that_is_a_file_or_under_a_file(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "run"):
        assert main(["score", *SMALL, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert str(blocker) in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_score_out_in_a_read_only_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["score", *SMALL, "--out", str(locked / "run")]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_cub_gha_huge_number_and_binary_file_are_named(tmp_path):
    f = tmp_path / "Fixation_run1.txt"
    f.write_text("1,100,100,10,10,200\n2,100,100,12345678901234567890123,10,200\n")
    with pytest.raises(AdapterError, match=r"Fixation_run1.txt, line 2, field 'x1': 12345678901234567890123 is far"):
        read_run_file(f, 1)
    skipped: list = []
    assert len(read_run_file(f, 1, skipped=skipped)) == 1 and len(skipped) == 1
    f.write_bytes(b"1,100,100,10,10,200\n2,100,\xe9\xff,10,10\n")
    with pytest.raises(AdapterError, match=r"Fixation_run1.txt, line 2: byte 0xe9 is not UTF-8"):
        read_run_file(f, 1)


def test_a_corrupt_gaze_cache_is_named_and_rebuilt(tmp_path):
    fix = [Fixations(np.array([10.0, 20.0]), np.array([5.0, 15.0]), np.full(2, 200.0), np.zeros(2, dtype=np.int64))]
    first = render_gaze_maps(fix, [(32, 32)], (16, 16), cache_dir=tmp_path)
    (npy,) = tmp_path.glob("gaze-*.npy")
    npy.write_bytes(b"\x93NUMPY garbage")
    with pytest.warns(UserWarning, match=rf"gaze cache {npy} is corrupt .* it is rebuilt"):
        again = render_gaze_maps(fix, [(32, 32)], (16, 16), cache_dir=tmp_path)
    torch.testing.assert_close(again.maps, first.maps)
    reread = render_gaze_maps(fix, [(32, 32)], (16, 16), cache_dir=tmp_path)  # the rebuilt entry is used
    torch.testing.assert_close(reread.maps, first.maps)
