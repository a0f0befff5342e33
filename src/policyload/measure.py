"""Trackers: small context managers a benchmark enters around the one load it measures.

Each tracker owns its reset, its baseline and its read-out (`readout()` returns a flat dict of
numbers for `benchmark.extra_info`). Baselines are subtracted, so a number is the load's alone
(optimum-benchmark does not subtract them, and its users ask why numbers look high).

In-process host numbers lie: glibc keeps freed memory, and `ru_maxrss` only ever grows. Peak
and resident RSS of a load are therefore read in a fresh process (`FreshProcessServer`), which
is also the cold-start measurement: the first load in a process that has only imported the
libraries.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil

MIB = 1024**2


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def synchronize(device: str | None) -> None:
    """Wait for queued device work, so a host clock read after it covers that work."""
    if device and device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


class LatencyTracker:
    """Wall time of the block with `perf_counter`, the device synchronized on both ends."""

    def __init__(self, device: str | None = None):
        self.device = device
        self.seconds: float | None = None

    def __enter__(self) -> LatencyTracker:
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start

    def readout(self) -> dict:
        return {"latency_s": self.seconds}


class CudaAllocatorTracker:
    """torch.cuda allocator bytes of the block alone: peak and resident, allocated and reserved.

    The peak counter is reset on entry and the bytes already allocated are the baseline, so a
    model left over from a previous case does not show up in this one.
    """

    def __init__(self, device: str = "cuda"):
        self.device = device
        self.values: dict = {}

    def __enter__(self) -> CudaAllocatorTracker:
        import torch

        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._allocated = torch.cuda.memory_allocated(self.device)
        self._reserved = torch.cuda.memory_reserved(self.device)
        return self

    def __exit__(self, *exc) -> None:
        import torch

        torch.cuda.synchronize(self.device)
        self.values = {
            "cuda_peak_allocated_bytes": torch.cuda.max_memory_allocated(self.device) - self._allocated,
            "cuda_resident_allocated_bytes": torch.cuda.memory_allocated(self.device) - self._allocated,
            "cuda_peak_reserved_bytes": torch.cuda.max_memory_reserved(self.device) - self._reserved,
            "cuda_resident_reserved_bytes": torch.cuda.memory_reserved(self.device) - self._reserved,
        }

    def readout(self) -> dict:
        return dict(self.values)


def nvml_device_used_bytes(nvml, handle) -> int:
    """Device memory in use by every process, as the driver sees it (`nvmlDeviceGetMemoryInfo`)."""
    return int(nvml.nvmlDeviceGetMemoryInfo(handle).used)


def nvml_process_used_bytes(nvml, handle, pid: int) -> int | None:
    """Device memory of process `pid` (CUDA context included), or None where the driver hides it.

    In containers the driver often reports no processes or `usedGpuMemory=None`: then None.
    """
    for process in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
        if process.pid == pid and process.usedGpuMemory is not None:
            return int(process.usedGpuMemory)
    return None


def cuda_context_bytes(process_used: int | None, torch_reserved: int) -> int | None:
    """What the driver charges this process beyond torch's allocator: CUDA context, kernels, cuBLAS."""
    return None if process_used is None else max(0, process_used - torch_reserved)


class NvmlTracker:
    """NVML device memory used by the block (delta) and this process's share, context apart.

    `nvml` is the `pynvml` module (nvidia-ml-py); tests pass a stand-in with recorded readings.
    """

    def __init__(self, device_index: int = 0, nvml=None, pid: int | None = None, torch_reserved=None):
        if nvml is None:
            import pynvml as nvml
        self.nvml = nvml
        self.device_index = device_index
        self.pid = os.getpid() if pid is None else pid
        self._torch_reserved = torch_reserved or self._read_torch_reserved
        self.values: dict = {}

    def _read_torch_reserved(self) -> int:
        import torch

        return torch.cuda.memory_reserved(self.device_index)

    def __enter__(self) -> NvmlTracker:
        self.nvml.nvmlInit()
        self._handle = self.nvml.nvmlDeviceGetHandleByIndex(self.device_index)
        self._used = nvml_device_used_bytes(self.nvml, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        try:
            process_used = nvml_process_used_bytes(self.nvml, self._handle, self.pid)
            self.values = {
                "nvml_device_used_delta_bytes": nvml_device_used_bytes(self.nvml, self._handle) - self._used,
                "nvml_process_used_bytes": process_used,
                "cuda_context_bytes": cuda_context_bytes(process_used, self._torch_reserved()),
            }
        finally:
            self.nvml.nvmlShutdown()

    def readout(self) -> dict:
        return dict(self.values)


def device_description(nvml=None) -> dict:
    """Name and driver of GPU 0 from NVML, or {} where there is none."""
    try:
        if nvml is None:
            import pynvml as nvml
        nvml.nvmlInit()
    except Exception:
        return {}
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(0)
        name = nvml.nvmlDeviceGetName(handle)
        driver = nvml.nvmlSystemGetDriverVersion()
        decode = lambda value: value.decode() if isinstance(value, bytes) else value  # noqa: E731
        return {"gpu_name": decode(name), "gpu_driver": decode(driver),
                "gpu_total_bytes": int(nvml.nvmlDeviceGetMemoryInfo(handle).total)}
    finally:
        nvml.nvmlShutdown()


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


class FreshProcessServer:
    """A child interpreter that imports torch, transformers, bitsandbytes and policyload once,
    then forks a fresh process per measurement: cold first load, peak and resident RSS.

    Forking from a process that has loaded nothing gives each measurement a clean heap and a
    resettable peak counter without paying the imports (seconds) per case. The interpreter's
    import time is measured once (`import_s`). CUDA is never initialised in the server, so each
    forked child may use it.
    """

    def __init__(self, timeout_s: float = 600):
        self.timeout_s = timeout_s
        self._process = subprocess.Popen(
            [sys.executable, "-m", "policyload.measure", "serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        self.import_s = self._reply()["import_s"]

    def _reply(self) -> dict:
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"fresh-process server exited with code {self._process.wait()}")
        return json.loads(line)

    def measure(self, spec_fields: dict) -> dict:
        """Cold-start numbers of `load_policy(LoadSpec(**spec_fields))` in a fresh process.

        Raises RuntimeError naming the failure if the child crashed (OOM-killed included).
        """
        self._process.stdin.write(json.dumps(spec_fields) + "\n")
        self._process.stdin.flush()
        reply = self._reply()
        if "error" in reply:
            raise RuntimeError(f"fresh-process load failed: {reply['error']}")
        return reply

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            self._process.wait(timeout=30)

    def __enter__(self) -> FreshProcessServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _measure_in_this_process(spec_fields: dict) -> dict:
    from .load import load_policy
    from .memory_model import measured_model_bytes
    from .spec import LoadSpec
    from .topology import Topology

    spec = LoadSpec(**spec_fields)
    topology = Topology.detect()
    device = f"cuda:{topology.local_process_index}" if topology.accelerator == "cuda" else None
    with RssTracker() as rss, LatencyTracker(device) as latency:
        model = load_policy(spec, topology)
    result = {"cold_first_load_s": latency.seconds, **rss.readout(), "measured_bytes": measured_model_bytes(model)}
    if device:
        import torch

        nvml = NvmlTracker(topology.local_process_index)
        try:
            with nvml:
                pass
            result["cold_nvml_process_used_bytes"] = nvml.values["nvml_process_used_bytes"]
            result["cold_cuda_context_bytes"] = nvml.values["cuda_context_bytes"]
        except Exception as error:  # NVML missing or restricted: the allocator numbers still stand
            result["cold_nvml_error"] = str(error)
        result["cold_cuda_allocated_bytes"] = torch.cuda.memory_allocated(device)
    return result


def _serve() -> None:
    start = time.perf_counter()
    import bitsandbytes  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from . import load  # noqa: F401

    print(json.dumps({"import_s": time.perf_counter() - start}), flush=True)
    for line in sys.stdin:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            try:
                reply = _measure_in_this_process(json.loads(line))
            except BaseException as error:  # reported to the parent, which fails the case
                reply = {"error": f"{type(error).__name__}: {error}"}
            with os.fdopen(write_end, "w") as out:
                out.write(json.dumps(reply))
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as source:
            text = source.read()
        _, status = os.waitpid(pid, 0)
        if not text:
            signal = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            text = json.dumps({"error": f"child died (signal {signal}, status {status}); out of memory?"})
        print(text, flush=True)


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        sys.exit("usage: python -m policyload.measure serve  (internal: the fresh-process server)")
    _serve()
