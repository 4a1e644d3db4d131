"""Shared fixtures. ``SHARED`` is the third-party data folder beside the repo (absent in a user's clone)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED = Path(__file__).resolve().parents[2] / "shared"
needs_shared = pytest.mark.skipif(not (SHARED / "data").exists(), reason="../shared/data is absent (a user's clone has none)")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
