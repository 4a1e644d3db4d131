"""`torchrun --nproc-per-node 2 -m gazemix train` on CPU (gloo): one results layout, written by rank 0 into one fresh
run folder that every rank agrees on."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="this PyTorch build has no gloo backend")


def test_two_process_torchrun_cpu(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "gazemix", "train", "--data", "demo", "--demo-train", "16", "--demo-val", "8", "--model", "test_vit",
           "--patch-size", "8", "--img-size", "32", "--mixer", "smmix", "--epochs", "1", "--batch-size", "4",
           "--workers", "0", "--device", "cpu", "--quiet", "--json", "--label-source", "gaze"]
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "runs" / "train").iterdir())
    assert len(runs) == 1  # the rank-0 folder name reached rank 1: no second folder
    out = runs[0]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # only rank 0 reports
    result = json.loads(lines[0])
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["steps_per_epoch"] == 2  # 16 images / (2 ranks x 4)
    assert result["out"] == str(out.relative_to(tmp_path)) and config["label_source"] == "gaze"
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[0]["train_loss"]) == pytest.approx(result["train_loss"])
    hits = float(rows[0]["top1"]) * 8 / 100  # the 8 validation images are each counted once across the ranks
    assert hits == pytest.approx(round(hits))
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
