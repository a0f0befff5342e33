"""The physical limits of a load: how fast the checkpoint's files can be read, and how fast the
host can copy to the device. A load's achieved bytes per second is judged against the lower."""

from __future__ import annotations

import time
from pathlib import Path

MIB = 1024**2


def file_read_bandwidth(paths, min_bytes: int = 256 * MIB, block: int = 16 * MIB) -> dict:
    """Read `paths` whole, first once (disk or page cache, whichever holds them) then repeatedly
    until `min_bytes` have been read (page cache): bytes per second of each.

    The page-cache figure is the physical limit of a load from a warm cache, which is what a
    benchmark round after the first sees; the first-read figure depends on what ran before.
    """
    paths = [Path(p) for p in paths]
    total = sum(p.stat().st_size for p in paths)
    buffer = bytearray(block)

    def read_all() -> int:
        count = 0
        for path in paths:
            with open(path, "rb", buffering=0) as handle:
                while n := handle.readinto(buffer):
                    count += n
        return count

    start = time.perf_counter()
    read_all()
    first = time.perf_counter() - start
    passes = max(1, -(-min_bytes // max(total, 1)))
    start = time.perf_counter()
    for _ in range(passes):
        read_all()
    cached = time.perf_counter() - start
    return {
        "checkpoint_bytes": total,
        "first_read_bytes_per_s": total / first if first > 0 else None,
        "page_cache_read_bytes_per_s": total * passes / cached if cached > 0 else None,
    }


def host_to_device_bandwidth(device: str = "cuda", nbytes: int = 256 * MIB, repeats: int = 5) -> dict:
    """Pinned and pageable host-to-device copy bandwidth (bytes/s, best of `repeats`)."""
    import torch

    result = {}
    for label, pin in (("pinned", True), ("pageable", False)):
        source = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin)
        target = torch.empty(nbytes, dtype=torch.uint8, device=device)
        best = float("inf")
        for _ in range(repeats):
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            target.copy_(source, non_blocking=pin)
            torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - start)
        result[f"h2d_{label}_bytes_per_s"] = nbytes / best
        del source, target
    torch.cuda.empty_cache()
    return result
