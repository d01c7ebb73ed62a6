"""harness.heap gives freed activation memory back to the OS (glibc Linux only)."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import heap

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(heap._LIBC is None, reason="needs glibc's mallopt/malloc_trim")

# In a fresh process: free a big block (glibc then raises its mmap threshold), allocate 40
# blocks of BLOCK bytes with small long-lived tensors in between (they pin the heap's top, as
# model state does), free the blocks; print RSS in MB before and after the free.
PROBE = textwrap.dedent("""
    import sys, torch
    from harness import heap
    rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
    mode, block = sys.argv[1], int(sys.argv[2])
    if mode == "map":
        heap.map_large_blocks()
    torch.empty(8 << 20, dtype=torch.uint8).fill_(1)
    keep, big = [], []
    for _ in range(40):
        big.append(torch.ones(block // 4))
        keep.append(torch.ones(1000))
    before = rss()
    del big
    if mode == "trim":
        heap.trim()
    print(before, rss())
""")


def freed_mb(mode: str, block: int) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(block)], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]) - float(out[1])


def test_large_blocks_are_unmapped_when_freed():
    assert freed_mb("off", 8 << 20) < 100      # 320 MB freed, kept by the heap
    assert freed_mb("map", 8 << 20) > 250      # given back


def test_trim_returns_free_heap_pages():
    assert freed_mb("off", 2 << 20) < 50       # 80 MB of 2 MB blocks, below the threshold
    assert freed_mb("trim", 2 << 20) > 60
