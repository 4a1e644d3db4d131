"""Smoke test of the benchmark suite (one tiny ``--quick`` run) and checks of its measuring helpers.

Benchmarks never run in the test suite otherwise; nothing here asserts a timing.
"""

from __future__ import annotations

import csv

import pytest
import torch

from benchmarks.main import main as bench_main
from benchmarks.main import targets_summary
from benchmarks.suite import (Impl, MixerRow, SaliencyRow, _judge, columns, floor_target, timed_mixers,
                              machine_line, mixer_modes, peak_extra_mb, time_interleaved)
from gazemix.cli import main as gazemix_main


def test_quick_run_writes_the_tables(tmp_path, capfd):
    out = tmp_path / "bench"
    assert gazemix_main(["bench", "--quick", "--device", "cpu", "--out", str(out)]) == 0
    printed, errors = capfd.readouterr()  # file-descriptor level: also what C++ code writes (issue 19)
    assert "x_floor" in printed and "targets missed:" in printed
    assert "gpuGetDeviceCount" not in printed + errors and "ERROR" not in errors  # no CUDA noise on a CPU run
    missed = printed.split("targets missed:")[1].splitlines()[1:]
    n_missed = int(printed.split("targets missed:")[1].split()[0])
    assert len(missed) == n_missed and all(line.startswith("  cpu ") and "target" in line for line in missed)
    with open(out / "bench_mixers.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == columns(MixerRow) == [
            "device", "mixer", "mode", "impl", "ms", "floor_ms", "x_floor", "x_best_peer", "peak_extra_mb",
            "target_met", "note"]
        rows = list(reader)
    mixers = timed_mixers(None)
    assert {"mixup", "cutmix", "fmix", "splicemix", "bc_plus"} <= set(mixers) and "saliencymix" not in mixers
    assert {r["mixer"] for r in rows} == set(mixers)  # every content-independent mixer has rows
    impls = {(r["mixer"], r["mode"], r["impl"]) for r in rows}
    assert {("mixup", "batch", "timm"), ("mixup", "batch", "torchvision"), ("mixup", "elem", "timm"),
            ("cutmix", "batch", "torchvision"), ("cutmix", "elem", "timm"), ("mixup", "batch", "floor")} <= impls
    assert ("mixup", "elem", "torchvision") not in impls  # torchvision has no per-sample mode
    for r in rows:
        assert r["target_met"] in ({"yes", "no"} if r["impl"] == "gazemix" else {"-"})
        if r["impl"] != "floor" and not r["note"].startswith("error"):
            assert float(r["x_floor"]) == pytest.approx(float(r["ms"]) / float(r["floor_ms"]), rel=1e-6)
    with open(out / "bench_saliency.csv", newline="") as f:
        assert csv.DictReader(f).fieldnames == columns(SaliencyRow)
    assert (out / "bench_mixers.png").stat().st_size > 0


def test_quick_gaze_section_on_a_tiny_cub_gha(tmp_path, capsys):
    pytest.importorskip("gazemix.scoring")
    from benchmarks.gaze import GazeRow

    gaze = tmp_path / "gaze"
    gaze.mkdir()
    lines = [f"{i},40,30,{5 + i},{7 + i},200,{20 - i},{15},300" for i in range(1, 7)]
    (gaze / "Fixation_run1.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert bench_main(["--quick", "--device", "cpu", "--mixers", "mixup,cutmix,bc_plus", "--cub-gha", str(gaze),
                       "--out", str(out)]) == 0
    assert "render all gaze maps at 32x32" in capsys.readouterr().out
    with open(out / "bench_gaze.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == columns(GazeRow)
        rows = {r["task"]: r for r in reader}
    assert rows["read CUB-GHA run files"]["items"] == "6"
    assert {"score 200 pairs: mixup", "score 200 pairs: cutmix"} <= set(rows)
    assert "score 200 pairs: bc_plus" not in rows  # timed as a kernel, but gaze alone cannot replay it
    assert all(r["target_met"] in ("yes", "no", "-") for r in rows.values())


def test_bad_options_are_reported(capsys):
    assert bench_main(["--batch", "7", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "--batch is deprecated; write --batch-size" in err and "--batch-size must be even" in err
    assert bench_main(["--quick", "--mixers", "saliencymix"]) == 2
    assert "--mixers saliencymix: not among the mixers the suite times" in capsys.readouterr().err
    assert bench_main(["--quick", "--device", "tpu"]) == 2
    assert bench_main(["--quick", "--threads", "0"]) == 2
    assert "--threads must be a positive integer" in capsys.readouterr().err
    assert bench_main(["--quick", "--cub-gha", "/no/such/folder"]) == 2
    assert "--cub-gha /no/such/folder is not a folder" in capsys.readouterr().err


def test_timing_is_interleaved_and_counts_repeats():
    order = []
    impls = [Impl("a", lambda _: order.append("a")), Impl("b", lambda _: order.append("b"), prepare=lambda: 1)]
    ms = time_interleaved(impls, torch.device("cpu"), repeats=3, warmup=1)
    assert order == ["a", "b"] * 4 and set(ms) == {"a", "b"}
    assert [len(i.times) for i in impls] == [3, 3]  # warm-up rounds are not kept


def test_peak_extra_memory_of_a_known_allocation():
    one_mib = Impl("alloc", lambda _: torch.empty(2 ** 18, dtype=torch.float32))  # 2**18 * 4 bytes
    assert peak_extra_mb(one_mib, torch.device("cpu")) == pytest.approx(1.0, abs=0.01)

    def temp_then_output(_):
        tmp = torch.ones(2 ** 18)
        out = tmp * 2
        del tmp
        return out
    assert peak_extra_mb(Impl("two", temp_then_output), torch.device("cpu")) == pytest.approx(2.0, abs=0.01)


def test_targets_are_judged_against_floor_and_peer():
    row = MixerRow("cpu", "mixup", "batch", "gazemix", 3.0, 2.0, 1.5, 1.04, 1.0, "-")
    assert _judge(row) == ("yes", "")
    row.x_floor, row.x_best_peer = 2.5, 1.2
    met, note = _judge(row)
    assert met == "no" and "2.50x the floor" in note and "1.20x the fastest peer" in note
    assert mixer_modes("mixup") == ("batch", "elem") and mixer_modes("resizemix") == ("-",)


def test_fmix_per_sample_masks_have_their_own_floor_target():  # issue 17: <= 3x, every other mixer <= 2x
    assert floor_target("fmix", "elem") == 3.0
    assert floor_target("fmix", "batch") == floor_target("splicemix", "-") == floor_target("bc_plus", "-") == 2.0
    row = MixerRow("cpu", "fmix", "elem", "gazemix", 5.0, 2.0, 2.5, None, 1.0, "-")
    assert _judge(row) == ("yes", "")
    row.x_floor = 3.2
    assert _judge(row) == ("no", "3.20x the floor (target <= 3x)")


def test_summary_names_every_missed_target():
    rows = [MixerRow("cpu", "fmix", "elem", "gazemix", 1, 1, 3.4, None, 1, "no", "3.40x the floor (target <= 3x)"),
            MixerRow("cpu", "fmix", "elem", "floor", 1, 1, 1.0, None, 1, "-"),
            MixerRow("cpu", "bc_plus", "-", "gazemix", 1, 1, 1.5, None, 1, "yes"),
            MixerRow("cpu", "mixup", "batch", "timm", 1, 1, 1.5, 1.0, 1, "-")]
    saliency = [SaliencyRow("cpu", "gazemix batched FFT", 8, 1.0, 12.0, "yes"),
                SaliencyRow("cpu", "OpenCV per-image loop", 8, 12.0, 1.0, "-")]
    text = targets_summary(rows, saliency, [])
    assert text.splitlines() == ["targets missed: 1 of 3", "  cpu fmix elem: 3.40x the floor (target <= 3x)"]
    assert "--quick" in targets_summary(rows, saliency, [], quick=True).splitlines()[0]
    rows[0].target_met = "yes"
    assert targets_summary(rows, saliency, []) == "targets: all 3 met"


def test_machine_line_gives_cores_and_load():
    line = machine_line()
    assert "cores" in line and "torch threads" in line and "torch " in line
    assert "load average" in line or not hasattr(__import__("os"), "getloadavg")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_peak_extra_memory_on_cuda():
    impl = Impl("alloc", lambda _: torch.empty(2 ** 18, device="cuda"))
    assert peak_extra_mb(impl, torch.device("cuda")) == pytest.approx(1.0, abs=0.01)


def test_score_speed_on_a_tiny_cub_gha(tmp_path, capsys):
    import numpy as np

    from benchmarks.score_speed import main as score_speed_main
    from benchmarks.score_speed import naive_cutmix_reference

    gaze = tmp_path / "gaze"
    gaze.mkdir()
    for run in (1, 2):  # two runs: every image has two observers, so the observer split holds
        lines = [f"{i},40,30,{5 + i + run},{7 + i},200,{20 - i},{15 + run},300" for i in range(1, 7)]
        (gaze / f"Fixation_run{run}.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "speed.csv"
    assert score_speed_main(["--cub-gha", str(gaze), "--cache", str(tmp_path / "cache"), "--pairs", "20",
                             "--no-default-run", "--out", str(out)]) == 0
    assert "per mixer, cub-gha, every gaze-only row (s):" in capsys.readouterr().out
    with open(tmp_path / "speed_mixers.csv", newline="") as f:
        seconds = list(csv.DictReader(f))
    assert {r["section"] for r in seconds} == {"cub-gha, registered gaze-only mixers", "cub-gha, every gaze-only row"}
    assert {"cutmix", "fmix", "splicemix", "comixup@gaze"} <= {r["mixer"] for r in seconds}
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["task"] == "gazemix score: all gaze-only mixers" and rows[0]["target"] == "<= 30 s"
    judged = [r for r in rows if r["target_met"] != "-"]
    assert [r["target_met"] in ("yes", "no") for r in judged] == [True] * 4 and rows[0] in judged
    references = [r for r in rows if r["task"].startswith("naive")]
    assert len(references) == 2 and all(float(r["seconds"]) > 0 for r in references)
    assert float(references[0]["x_run_file_reference"]) == 1.0 and float(references[1]["x_in_memory_reference"]) == 1.0
    uniform = np.full((3, 16, 16), 1 / 256, dtype=np.float32)  # gaze spread like pixels: CutMix's label is exact
    gap, _ = naive_cutmix_reference(uniform, 50)
    assert gap == pytest.approx(0.0, abs=1e-6)


def test_score_speed_needs_something_to_time(tmp_path, capsys):
    from benchmarks.score_speed import main as score_speed_main

    with pytest.raises(SystemExit):
        score_speed_main(["--cub-gha", str(tmp_path / "absent"), "--no-default-run"])
    assert "nothing to time" in capsys.readouterr().err
