"""Host resident memory (RSS) of a block: resident delta and peak, read from /proc where it can be.

In-process host numbers lie: glibc keeps freed memory, and `ru_maxrss` only ever grows. Peak and
resident RSS of a load are therefore read in a fresh process (`fresh_process.py`).
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import psutil


def rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) by writing 5 to /proc/self/clear_refs (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """VmHWM from /proc/self/status where readable, else `ru_maxrss` (KiB on Linux, bytes on macOS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024


class RssTracker:
    """Host RSS of the block: resident delta, and peak above the starting RSS.

    Meaningful in a process that has loaded nothing before (see `FreshProcessServer`): in a
    long-lived process freed memory stays mapped and the peak may predate the block, which is why
    `peak_reset` says whether the peak counter could be reset.
    """

    def __enter__(self) -> RssTracker:
        self.peak_reset = reset_peak_rss()
        self._rss = rss_bytes()
        return self

    def __exit__(self, *exc) -> None:
        after = rss_bytes()
        self.values = {
            "rss_baseline_bytes": self._rss,
            "rss_after_load_bytes": after - self._rss,
            "peak_rss_during_load_bytes": max(0, peak_rss_bytes() - self._rss),
            "peak_rss_reset": self.peak_reset,
        }

    def readout(self) -> dict:
        return dict(self.values)
