"""The physical limits of a load: how fast the checkpoint's files can be read, and how fast the
host can copy to the device.

A safetensors load maps the file and faults its pages in (bf16 from bf16: the weights *are* the
pages) or reads them once to convert: `mmap_touch_bandwidth` measures that path (a fresh mapping,
one byte read per page, from the page cache), and `safetensors_load_bandwidth` times safetensors'
own `load_file` as an empirical reference (it is itself a mapping whose pages are read only when
used, so it bounds nothing: 21.9 GB/s against 2.0 GB/s for mmap + touch on the 2-core machine). The `readinto` loop of
`file_read_bandwidth` is kept for reference only: it is not the path a load takes.

On a GPU the load reads, then copies to the device: without a measured overlap the two stages are
serial, so the limit is `serial_limit(read, h2d) = 1 / (1/read + 1/h2d)`, not the lower of the two.
"""

from __future__ import annotations

import mmap
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


def mmap_touch_bandwidth(paths, min_bytes: int = 256 * MIB, page: int = 4096) -> dict:
    """Bytes per second of mapping `paths` afresh and reading one byte per page, from the page
    cache (one pass first to fill it, then passes until `min_bytes`): the path of a safetensors load."""
    paths = [Path(p) for p in paths]
    total = sum(p.stat().st_size for p in paths)

    def touch_all() -> None:
        for path in paths:
            if path.stat().st_size == 0:
                continue
            with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                sum(mapped[index] for index in range(0, len(mapped), page))

    touch_all()
    passes = max(1, -(-min_bytes // max(total, 1)))
    start = time.perf_counter()
    for _ in range(passes):
        touch_all()
    elapsed = time.perf_counter() - start
    return {"mmap_touch_bytes_per_s": total * passes / elapsed if elapsed > 0 else None}


def safetensors_load_bandwidth(paths) -> dict:
    """Bytes per second of `safetensors.torch.load_file` over `paths` (page cache warm): an
    empirical reference, not a bound (load_file maps the file; pages are read when used)."""
    from safetensors.torch import load_file

    paths = [Path(p) for p in paths if str(p).endswith(".safetensors")]
    if not paths:
        return {"safetensors_load_file_bytes_per_s": None}
    total = sum(p.stat().st_size for p in paths)
    start = time.perf_counter()
    for path in paths:
        tensors = load_file(path)
        del tensors
    elapsed = time.perf_counter() - start
    return {"safetensors_load_file_bytes_per_s": total / elapsed if elapsed > 0 else None}


def serial_limit(*rates: float) -> float:
    """The throughput of stages that run one after the other: 1 / sum(1 / rate)."""
    return 1 / sum(1 / rate for rate in rates)
