"""`gazemix train` on the command line: one vocabulary with the other commands (old spellings still work, with one
deprecation line each), run folders that never overwrite each other, progress that agrees with the summary, and
one-line user errors naming the flag."""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import pytest

from gazemix.cli import build_parser, main
from tests.test_train import make_cub_layout

MODEL = ["--model", "test_vit", "--patch-size", "8", "--img-size", "32", "--mixer", "cutmix", "--workers", "0",
         "--device", "cpu", "--lr", "1e-3"]
TINY = ["--demo-train", "16", "--demo-val", "8", "--batch-size", "8", "--max-steps", "1", *MODEL]


def epochs_of(folder: Path) -> list[int]:
    with open(folder / "metrics.csv") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.strip() and "warning:" not in ln]


def train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_help_states_every_default():
    p = train_parser()
    formatter = p.formatter_class(prog="gazemix train")
    for action in p._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        text = formatter._get_help_string(action)
        store_flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        assert store_flag or "default" in text, f"{action.option_strings} does not state its default"
    assert "(default: 30)" in p.format_help() and "(default: 224)" in p.format_help()


def test_the_command_line_lists_the_library_choices():
    from gazemix.cli import train as cli_train
    from gazemix.training.labels import LABEL_SOURCES

    assert cli_train.LABEL_SOURCES == LABEL_SOURCES  # spelled out there so --help needs no torch


def test_old_spellings_work_with_one_deprecation_line_each(tmp_path, capsys):
    cub, gaze_dir = make_cub_layout(tmp_path)
    args = ["train", "--data", "cub", "--root", str(cub), "--gaze-root", str(gaze_dir), "--mixer-opt", "alpha=0.5",
            "--batch-size", "2", "--epochs", "1", "--out", str(tmp_path / "old"), "--quiet", *MODEL]
    assert main(args) == 0
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if "deprecated" in ln]
    assert len(warnings) == 3, err
    assert any("--data cub-gha" in w for w in warnings) and any("--fixations" in w for w in warnings)
    assert any("cutmix.alpha=0.5" in w for w in warnings)
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    assert config["data"] == "cub-gha" and config["fixations"] == [str(gaze_dir)]
    assert config["mixer_options"] == {"alpha": 0.5}
    new = ["train", "--data", "cub-gha", "--root", str(cub), "--fixations", str(gaze_dir), "--mixer-opt",
           "cutmix.alpha=0.5", "--batch-size", "2", "--epochs", "1", "--out", str(tmp_path / "new"), "--quiet", *MODEL]
    assert main(new) == 0
    assert "deprecated" not in capsys.readouterr().err


def test_default_run_folders_are_fresh_and_timestamped(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert main(["train", *TINY, "--epochs", "1", "--quiet"]) == 0
    runs = sorted(p.name for p in (tmp_path / "runs" / "train").iterdir())
    assert len(runs) == 2 and all(re.fullmatch(r"\d{8}-\d{6}-cutmix(-\d+)?", r) for r in runs), runs
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(not ln.startswith("{") and "top-1" in ln for ln in out)
    assert {ln.split(":")[0] for ln in out} == {str(Path("runs/train") / r) for r in runs}


def test_a_folder_holding_a_run_is_refused_unless_resumed(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", *TINY, "--quiet", "--out", str(out)]
    assert main(base + ["--epochs", "1"]) == 0
    capsys.readouterr()
    before = (out / "last.pt").stat().st_mtime_ns, (out / "metrics.csv").read_text()
    assert main(base + ["--epochs", "1"]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "already holds a run" in err[0] and "--resume" in err[0]
    assert ((out / "last.pt").stat().st_mtime_ns, (out / "metrics.csv").read_text()) == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main(["train", *TINY, "--quiet", "--out", str(tmp_path / "other"), "--epochs", "2",
                 "--resume", str(out / "last.pt")]) == 2
    assert "holds files of another run" in capsys.readouterr().err
    assert main(["train", *TINY, "--quiet", "--epochs", "2", "--resume"]) == 2
    assert "pass --out RUN_FOLDER" in capsys.readouterr().err
    assert main(base + ["--epochs", "2", "--resume"]) == 0
    assert epochs_of(out) == [1, 2]


def test_resuming_an_earlier_checkpoint_keeps_the_epochs_in_order(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", *TINY, "--quiet", "--out", str(out)]
    assert main(base + ["--epochs", "2"]) == 0
    import torch

    state = torch.load(out / "last.pt", weights_only=True)
    state["epoch"] = 1  # as if the checkpoint had been written after epoch 1 (e.g. a best.pt of epoch 1)
    torch.save(state, out / "epoch1.pt")
    assert main(base + ["--epochs", "2", "--resume", str(out / "epoch1.pt")]) == 0
    assert epochs_of(out) == [1, 2]  # epoch 2 trained again, never 1, 2, 2


def test_resume_into_a_new_folder_carries_the_earlier_rows(tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["train", *TINY, "--quiet", "--out", str(first), "--epochs", "1"]) == 0
    assert main(["train", *TINY, "--quiet", "--out", str(tmp_path / "second"), "--epochs", "2", "--resume",
                 str(first / "last.pt")]) == 0
    assert epochs_of(tmp_path / "second") == [1, 2] and epochs_of(first) == [1]


def test_progress_bar_summary_and_metrics_agree(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "2", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    err = cap.err.replace("\r", "\n")
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        e = row["epoch"]
        summary = next(ln for ln in err.splitlines() if ln.startswith(f"epoch {e}/2: loss"))
        bar = [ln for ln in err.splitlines() if ln.startswith(f"epoch {e}/2:") and "|" in ln and "loss" in ln][-1]
        loss = f"loss {float(row['train_loss']):.4f} (mean)"
        rate = f"{float(row['images_per_second']):.0f} img/s"
        data = f"data {1000 * float(row['data_seconds_per_step']):.0f} ms/step"
        for part in (loss, rate, data, "run ETA"):
            assert part in summary and part in bar, (part, summary, bar)
    assert "top-5" not in err  # 6 demo classes: top-5 says nothing
    top1 = [float(r["top1"]) for r in rows]
    best = max(top1)
    assert cap.out.strip() == (f"{out}: epoch 2, top-1 {top1[-1]:.2f}% (best {best:.2f}% at epoch "
                               f"{top1.index(best) + 1}), val loss {float(rows[-1]['val_loss']):.4f}")


@pytest.mark.parametrize("extra, flag, hint", [
    (["--pretrained-path", "/nope.pth"], "--pretrained-path /nope.pth", "no such file"),
    (["--checkpoint", "/nope.pth"], "--checkpoint /nope.pth", "no such file"),
    (["--mixer-opt", "cutmix.nonsense=3"], "--mixer-opt cutmix.nonsense=3", "its options: alpha"),
    (["--mixer-opt", "cutmix.alpha=-3"], "--mixer-opt cutmix.alpha=-3", "alpha must be"),
    (["--mixer-opt", "mixup.alpha=1"], "--mixer-opt mixup.alpha=1", "--mixer is cutmix"),
    (["--mixer-opt", "cutmix.num_classes=3"], "--mixer-opt cutmix.num_classes=3", "set by the trainer"),
    (["--data", "cub-ghaa"], "--data cub-ghaa", "did you mean cub-gha"),
    (["--data", "mit1003", "--root", "/nope"], "--data mit1003", ""),
    (["--label-source", "human"], "--label-source human", "--calibration"),
    (["--calibration", "/nope.json", "--label-source", "human"], "--calibration /nope.json", "no such file"),
    (["--resume", "/nope.pt"], "--resume /nope.pt", "no such file"),
    (["--mixer", "none", "--label-source", "gaze"], "--label-source gaze", "mixes none"),
    (["--mixer", "none", "--mixer-opt", "cutmix.alpha=1"], "--mixer-opt cutmix.alpha=1", "takes no options"),
    (["--img-size", "36"], "--img-size 36", "not divisible by the patch size 8"),
    (["--img-size", "24"], "--img-size 24", "32 pixels or more"),
    (["--batch-size", "64"], "--batch-size", "at most 16"),
    (["--device", "gpu"], "--device", "unknown device 'gpu'"),
    (["--crop-scale", "0.5", "0.1"], "--crop-scale", "MIN <= MAX"),
    (["--lr", "-1"], "--lr", "(0, inf)"),
    (["--data", "folder", "--root", "/nope"], "--root", "/nope"),
])
def test_user_errors_are_one_line_naming_the_flag(tmp_path, capsys, extra, flag, hint):
    out = tmp_path / "x"
    assert main(["train", *TINY, "--epochs", "1", "--quiet", "--out", str(out), *extra]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("gazemix train: error: "), err
    assert flag in err[0] and hint in err[0], err[0]
    assert not out.exists()  # nothing written, not even an empty folder


def test_bad_calibration_file_is_named(tmp_path, capsys):
    bad = tmp_path / "fit.json"
    bad.write_text('{"format": "gazemix-calibration",\n "mixers": {"cutmix": {"lam": [0, 1], "perceived": [0.5')
    assert main(["train", *TINY, "--epochs", "1", "--quiet", "--out", str(tmp_path / "x"), "--label-source",
                 "human", "--calibration", str(bad)]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "--calibration" in err[0] and "line 2" in err[0] and "malformed JSON" in err[0]
    bad.write_text(json.dumps({"format": "gazemix-calibration", "mixers": {"mixup": {"lam": [0, 1],
                                                                                      "perceived": [0, 1]}}}))
    assert main(["train", *TINY, "--epochs", "1", "--quiet", "--out", str(tmp_path / "x"), "--label-source",
                 "human", "--calibration", str(bad)]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "no curve for 'cutmix' (it has mixup)" in err[0] and "--calibration-mixer" in err[0]
