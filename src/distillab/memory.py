"""Peak memory of one stretch of work (a condensation, a benchmark cell).

On the CPU it is the process's resident high-water mark, reset at the start where the system allows it (Linux:
``/proc/self/clear_refs``, after the C heap's free pages are handed back, so memory freed earlier does not hide new
allocations); elsewhere the lifetime peak is all there is, and ``since_start`` says so. On CUDA it is
the allocator's peak, reset at the start.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (Linux) in MB, or None where there is none."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _high_water_mb() -> float | None:
    return _status_mb("VmHWM")


def rss_now_mb() -> float | None:
    """The process's resident memory now (None off Linux)."""
    return _status_mb("VmRSS")


def lifetime_peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _return_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim), where there is such a call."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.rss_mb`` (resident, MB), ``peak.device_mb`` (CUDA
    allocations, MB, or None) and ``peak.since_start`` (False when only the process's lifetime peak could be read)."""

    def __init__(self, device="cpu"):
        self.cuda = torch.device(device).type == "cuda"
        self.rss_mb: float | None = None
        self.device_mb: float | None = None
        self.since_start = False

    def __enter__(self) -> "PeakMemory":
        _return_free_memory()  # freed heap pages stay resident and would hide new allocations from VmHWM
        try:
            CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident size
            self.since_start = _high_water_mb() is not None
        except OSError:
            self.since_start = False
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        return self

    def read(self) -> dict:
        now = _high_water_mb() if self.since_start else None
        self.rss_mb = round(now if now is not None else lifetime_peak_rss_mb(), 1)
        if self.cuda:
            self.device_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return self.describe()

    def __exit__(self, *exc) -> None:
        self.read()

    def describe(self) -> dict:
        return {"peak_rss_mb": self.rss_mb, "peak_device_mb": self.device_mb,
                "peak_measured": "since the start" if self.since_start else "process lifetime"}
