"""Blocks of whole images for CPU kernels that make several passes over a batch.

A pass over a whole 128 x 3 x 224 x 224 batch streams 77 MB through memory, and every batch-sized temporary
is a fresh allocation that the operating system must fault in page by page. Doing the passes block by block
keeps each block's temporaries in cache and reuses their memory. Other devices get the whole batch as one
block (there, kernel launches cost more than memory traffic).

Each block operation runs on one intra-op thread (:func:`single_threaded`): every block operation would otherwise
be a parallel region of its own, and when other processes keep the cores busy the threads' synchronisation at the
end of each region costs more than the block's work (measured on 2 shared cores under load: BC+ took 1.3 s with its
block loops on two threads, 0.07 s with them on one). :func:`for_each_block` instead hands whole blocks to as many
Python threads as PyTorch had intra-op threads (PyTorch releases the GIL inside its operations).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

BLOCK_BYTES = 4 << 20  # a few blocks fit in the last-level cache of current CPUs


def row_blocks(n: int, row_bytes: int, device: torch.device) -> Iterator[slice]:
    """Slices ``lo:hi`` covering ``range(n)``: whole rows of about :data:`BLOCK_BYTES` on the CPU, one slice elsewhere."""
    step = n if device.type != "cpu" else max(1, BLOCK_BYTES // max(1, row_bytes))
    for lo in range(0, n, max(1, step)):
        yield slice(lo, min(lo + step, n))


@contextmanager
def single_threaded(device: torch.device) -> Iterator[None]:
    """Run the enclosed CPU work on one intra-op thread (no effect on other devices or with one thread already).

    For block loops of ``torch.fft`` calls: with this PyTorch's MKL build each inverse FFT call on two threads costs
    about 25 ms of set-up (measured on 2 cores: 128 inverse FFTs of 224 x 224 in 20-image blocks, 280 ms on two
    threads, 31 ms on one), and its results can differ in the last bit between thread counts. The thread count is
    process-wide, so other threads' PyTorch work in the meantime also runs on one thread; it is restored on exit.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def for_each_block(work: Callable[[slice], None], n: int, row_bytes: int, device: torch.device) -> None:
    """Call ``work(rows)`` for every block of :func:`row_blocks`, blocks spread over the CPU's intra-op threads.

    Each block's operations run on one intra-op thread, so results do not depend on the thread count; ``work``
    must write disjoint outputs per block. Other devices get one call with the whole batch.
    """
    blocks = list(row_blocks(n, row_bytes, device))
    workers = min(len(blocks), torch.get_num_threads()) if device.type == "cpu" else 1
    with single_threaded(device):
        if workers <= 1:
            for rows in blocks:
                work(rows)
            return
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, blocks))  # waits for every block and re-raises a block's exception
