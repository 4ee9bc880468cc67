"""Speed settings of the process: the allocator and the thread count.

glibc serves allocations over 32 MB straight from the kernel (mmap) and hands them back on free; PyTorch's CPU
allocator frees a batch's activations every step, so every step pays for fresh zeroed pages -- measured here, a
third of an evaluation epoch. ``tune_allocator()`` keeps large blocks on the heap and the freed memory in the
process (``mallopt(M_MMAP_MAX, 0)``, a 1 GiB trim threshold): an evaluation epoch of ConvNet-3 on 100 MNIST images
with DSA went from 0.545 to 0.384 s (one thread, 2-core AMD EPYC Zen 4; docs/benchmarks.md). The CLI calls it at
start; library users call ``distillab.tune_allocator()`` once, early. Peak memory is unchanged; memory freed late in
a run is returned to the system later. ``DISTILLAB_NO_MALLOPT=1`` turns it off.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
TRIM_THRESHOLD = 1 << 30
_DONE = {"tuned": None}


def tune_allocator() -> bool:
    """Keep large blocks on the heap (glibc only; elsewhere a no-op). Returns whether the setting took effect."""
    if _DONE["tuned"] is not None:
        return _DONE["tuned"]
    tuned = False
    if os.environ.get("DISTILLAB_NO_MALLOPT") != "1" and platform.system() == "Linux" and \
            platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL("libc.so.6")
            tuned = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        except (OSError, AttributeError):
            tuned = False
    _DONE["tuned"] = tuned
    return tuned
