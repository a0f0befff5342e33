"""What a loaded model occupies in host memory, read from the machine (Linux /proc), not from the
model's own tensor sizes.

A CPU load holds two kinds of resident memory, and they mean different things:

* anonymous (`RssAnon`): private copies: a dtype conversion's result, quantized weights, the
  allocator's heap. Swap or nothing can take it back.
* file-backed (`RssFile`): pages of the checkpoint's safetensors files mapped by the load. A bf16
  load of a bf16 checkpoint copies nothing: its weights are these pages. Quantized loads keep the
  whole file mapped although only the tensors whose dtype matches the file (the embedding) still
  point into it; the rest is clean page cache the kernel may drop.

`host_memory_after_load` reads both from /proc/self/status, and, through /proc/self/pagemap, how many
file-backed pages inside the address ranges of live tensors are present: the file-backed memory
the model still uses. Page granularity: figures are multiples of the page size.
"""

from __future__ import annotations

import bisect
import ctypes
import os
import struct
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATUS_KEYS = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "RssShmem": "shmem", "VmHWM": "peak"}


def proc_status(path: str = "/proc/self/status") -> dict:
    """{'rss', 'anon', 'file', 'shmem', 'peak'} in bytes from /proc/self/status (kB lines)."""
    values = {}
    for line in Path(path).read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in _STATUS_KEYS:
            values[_STATUS_KEYS[key]] = int(rest.split()[0]) * 1024
    return values


def trim_heap() -> bool:
    """Give the C heap's free pages back to the kernel (glibc `malloc_trim(0)`); False elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def file_mappings(maps_path: str = "/proc/self/maps") -> list[tuple[int, int, str]]:
    """(start, end, path) of every mapping backed by a regular file."""
    mappings = []
    for line in Path(maps_path).read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[4] != "0" and parts[5].startswith("/"):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            mappings.append((start, end, parts[5]))
    return mappings


def present_pages(pages, pagemap_path: str = "/proc/self/pagemap") -> int:
    """How many of `pages` (page numbers of this process) are resident: bit 63 of /proc/self/pagemap.

    Readable without privileges (only the frame numbers are hidden).
    """
    ordered = sorted(pages)
    count = 0
    with open(pagemap_path, "rb", buffering=0) as pagemap:
        index = 0
        while index < len(ordered):
            # Read runs of consecutive pages in one call.
            first = last = ordered[index]
            while index + 1 < len(ordered) and ordered[index + 1] == last + 1 and last - first < 65535:
                index += 1
                last = ordered[index]
            index += 1
            pagemap.seek(first * 8)
            data = pagemap.read((last - first + 1) * 8)
            count += sum(1 for (entry,) in struct.iter_unpack("<Q", data) if entry >> 63)
    return count


def file_backed_resident_bytes(ranges, mappings=None) -> int:
    """Resident bytes of the file-backed pages inside `ranges` ((start, nbytes) of live tensors)."""
    mappings = sorted(file_mappings() if mappings is None else mappings)
    starts = [start for start, _, _ in mappings]
    inside: set[int] = set()
    for start, nbytes in ranges:
        end = start + nbytes
        index = max(0, bisect.bisect_right(starts, start) - 1)
        while index < len(mappings) and mappings[index][0] < end:
            low, high = max(start, mappings[index][0]), min(end, mappings[index][1])
            if low < high:
                inside.update(range(low // PAGE, (high - 1) // PAGE + 1))
            index += 1
    return present_pages(inside) * PAGE if inside else 0


def live_storages(model) -> list[tuple[int, int]]:
    """(data_ptr, nbytes) of every distinct CPU storage the model holds: parameters, buffers and
    bitsandbytes' quantization state. Used only to say *where* live tensors are, never how much
    memory they occupy (that is read from the machine)."""
    from ..memory_model import quant_state_tensors

    seen: dict[int, int] = {}
    for tensor in (*model.parameters(), *model.buffers()):
        for item in (tensor, *quant_state_tensors(tensor)):
            if item.device.type == "cpu":
                storage = item.untyped_storage()
                seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
    return list(seen.items())


def touch(storages) -> None:
    """Read one byte of every page of `storages`, so mapped weights are resident as they are once used."""
    import torch

    for pointer, nbytes in storages:
        if nbytes:
            view = (ctypes.c_ubyte * nbytes).from_address(pointer)
            torch.frombuffer(view, dtype=torch.uint8)[::PAGE].sum()


def checkpoint_files(path: str) -> list[str]:
    """The weight files of a local checkpoint folder ([] for a hub id: nothing to evict)."""
    folder = Path(path)
    if not folder.is_dir():
        return []
    return [str(p) for p in sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))]


def evict_from_page_cache(paths) -> bool:
    """Drop `paths` from the page cache (POSIX_FADV_DONTNEED on each whole file): the next read
    comes from the disk. Clean pages only, which is what a checkpoint on disk has. False where the
    platform has no posix_fadvise."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def use_model(model) -> list[tuple[int, int]]:
    """Make the model as resident as it is once used: one forward pass of four tokens, then a read
    of every page of its storages (a forward pass reads every weight but the unused embedding
    rows). Returns the storages' (address, size)."""
    import torch

    with torch.no_grad():
        model(torch.tensor([[1, 2, 3, 4]], device=model.device))
    storages = live_storages(model)
    touch(storages)
    return storages


def host_memory_after_load(baseline: dict, storages) -> dict:
    """Host memory the loaded model occupies (bytes, baseline subtracted), read from /proc.

    `anon_untrimmed`: private memory as the process holds it, glibc's retained free heap included;
    `anon`: after `gc.collect()` and `malloc_trim(0)` (what the model's memory needs);
    `file`: all file-backed resident memory (checkpoint mapping and lazily paged-in library code);
    `file_referenced`: resident file-backed pages inside live tensors (present in /proc/self/pagemap);
    `peak`: VmHWM above the baseline RSS, over the load, the forward pass and the page reads.
    """
    import gc

    untrimmed = proc_status()
    gc.collect()
    trimmed = trim_heap()
    after = proc_status()
    return {
        "host_anon_bytes": after["anon"] - baseline["anon"],
        "host_anon_untrimmed_bytes": untrimmed["anon"] - baseline["anon"],
        "host_file_bytes": after["file"] - baseline["file"],
        "host_file_referenced_bytes": file_backed_resident_bytes(storages),
        "host_peak_bytes": after["peak"] - baseline["rss"],
        "host_heap_trimmed": trimmed,
        "host_page_bytes": PAGE,
    }
