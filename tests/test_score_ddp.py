"""`torchrun --nproc-per-node 2 -m gazemix score` on CPU (gloo) writes exactly the single-process outputs."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch.distributed as dist

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="this PyTorch build has no gloo backend")

ARGS = ["score", "--mixers", "mixup,cutmix,gazemix,resizemix,splicemix,fmix", "--pairs", "50", "--n-images", "16",
        "--img-size", "32", "--batch-size", "8", "--seed", "3", "--device", "cpu", "--quiet", "--worst", "2"]


def test_two_process_torchrun_matches_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "gazemix", *ARGS, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, timeout=240, env=env)
    assert single.returncode == 0, single.stderr[-3000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "gazemix", *ARGS, "--out", str(tmp_path / "two")]
    sharded = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert "rank 0/2: scored" in sharded.stderr and "rank 1/2: scored" in sharded.stderr
    assert sharded.stdout.count("results in") == 1  # rank 0 alone reports and writes
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one" / "samples.parquet"),
                                  pd.read_parquet(tmp_path / "two" / "samples.parquet"))
    assert (tmp_path / "one" / "scores.csv").read_bytes() == (tmp_path / "two" / "scores.csv").read_bytes()
