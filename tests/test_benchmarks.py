"""Smoke test of the benchmark suite (one tiny ``--quick`` run) and checks of its measuring helpers.

Benchmarks never run in the test suite otherwise; nothing here asserts a timing.
"""

from __future__ import annotations

import csv

import pytest
import torch

from benchmarks.main import main as bench_main
from benchmarks.suite import (Impl, MixerRow, SaliencyRow, _judge, columns, content_independent_mixers,
                              mixer_modes, peak_extra_mb, time_interleaved)
from gazemix.cli import main as gazemix_main


def test_quick_run_writes_the_tables(tmp_path, capsys):
    assert gazemix_main(["bench", "--quick", "--device", "cpu", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "x_floor" in printed and "targets missed:" in printed
    with open(tmp_path / "bench_mixers.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == columns(MixerRow) == [
            "device", "mixer", "mode", "impl", "ms", "floor_ms", "x_floor", "x_best_peer", "peak_extra_mb",
            "target_met", "note"]
        rows = list(reader)
    mixers = content_independent_mixers(None)
    assert {"mixup", "cutmix"} <= set(mixers)
    assert {r["mixer"] for r in rows} == set(mixers)  # every content-independent mixer has rows
    impls = {(r["mixer"], r["mode"], r["impl"]) for r in rows}
    assert {("mixup", "batch", "timm"), ("mixup", "batch", "torchvision"), ("mixup", "elem", "timm"),
            ("cutmix", "batch", "torchvision"), ("cutmix", "elem", "timm"), ("mixup", "batch", "floor")} <= impls
    assert ("mixup", "elem", "torchvision") not in impls  # torchvision has no per-sample mode
    for r in rows:
        assert r["target_met"] in ({"yes", "no"} if r["impl"] == "gazemix" else {"-"})
        if r["impl"] != "floor" and not r["note"].startswith("error"):
            assert float(r["x_floor"]) == pytest.approx(float(r["ms"]) / float(r["floor_ms"]), rel=1e-6)
    with open(tmp_path / "bench_saliency.csv", newline="") as f:
        assert csv.DictReader(f).fieldnames == columns(SaliencyRow)
    assert (tmp_path / "bench_mixers.png").stat().st_size > 0


def test_quick_gaze_section_on_a_tiny_cub_gha(tmp_path, capsys):
    pytest.importorskip("gazemix.scoring")
    from benchmarks.gaze import GazeRow

    gaze = tmp_path / "gaze"
    gaze.mkdir()
    lines = [f"{i},40,30,{5 + i},{7 + i},200,{20 - i},{15},300" for i in range(1, 7)]
    (gaze / "Fixation_run1.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert bench_main(["--quick", "--device", "cpu", "--mixers", "mixup,cutmix", "--cub-gha", str(gaze),
                       "--out", str(out)]) == 0
    assert "render all gaze maps at 32x32" in capsys.readouterr().out
    with open(out / "bench_gaze.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == columns(GazeRow)
        rows = {r["task"]: r for r in reader}
    assert rows["read CUB-GHA run files"]["items"] == "6"
    assert {"score 200 pairs: mixup", "score 200 pairs: cutmix"} <= set(rows)
    assert all(r["target_met"] in ("yes", "no", "-") for r in rows.values())


def test_bad_options_are_reported(capsys):
    assert bench_main(["--batch", "7", "--quick"]) == 2
    assert "--batch must be even" in capsys.readouterr().err
    assert bench_main(["--quick", "--mixers", "saliencymix"]) == 2
    assert "--mixers saliencymix: not registered content-independent" in capsys.readouterr().err
    assert bench_main(["--quick", "--device", "tpu"]) == 2
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_peak_extra_memory_on_cuda():
    impl = Impl("alloc", lambda _: torch.empty(2 ** 18, device="cuda"))
    assert peak_extra_mb(impl, torch.device("cuda")) == pytest.approx(1.0, abs=0.01)
