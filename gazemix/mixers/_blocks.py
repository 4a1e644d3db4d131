"""Blocks of whole images for CPU kernels that make several passes over a batch.

A pass over a whole 128 x 3 x 224 x 224 batch streams 77 MB through memory, and every batch-sized temporary
is a fresh allocation that the operating system must fault in page by page. Doing the passes block by block
keeps each block's temporaries in cache and reuses their memory. Other devices get the whole batch as one
block (there, kernel launches cost more than memory traffic).

Every block operation is a parallel region of its own: when other processes keep the cores busy, the threads'
synchronisation at the end of each region can cost more than the cache saves (time such kernels with
``gazemix bench --threads 1`` on a shared machine).
"""

from __future__ import annotations

from typing import Iterator

import torch

BLOCK_BYTES = 4 << 20  # a few blocks fit in the last-level cache of current CPUs


def row_blocks(n: int, row_bytes: int, device: torch.device) -> Iterator[slice]:
    """Slices ``lo:hi`` covering ``range(n)``: whole rows of about :data:`BLOCK_BYTES` on the CPU, one slice elsewhere."""
    step = n if device.type != "cpu" else max(1, BLOCK_BYTES // max(1, row_bytes))
    for lo in range(0, n, max(1, step)):
        yield slice(lo, min(lo + step, n))
