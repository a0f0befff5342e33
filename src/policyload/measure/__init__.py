"""Measurements of one load: trackers a benchmark enters around it, bandwidth probes, and a fresh
process for what a long-lived one cannot measure.

Each tracker is a small context manager that owns its reset, its baseline and its read-out
(`readout()` returns a flat dict of numbers for `benchmark.extra_info`). Baselines are
subtracted, so a number is the load's alone (optimum-benchmark does not subtract them, and its
users ask why numbers look high).

One module per job, every public name re-exported here (`from policyload.measure import X`):

    latency.py         LatencyTracker; synchronize, cuda_available
    cuda_allocator.py  CudaAllocatorTracker (torch.cuda allocator bytes)
    rss.py             RssTracker; rss_bytes, peak_rss_bytes, reset_peak_rss
    nvml.py            NvmlTracker (driver-side device memory), device_description; the nvml_*
                       helpers, cuda_context_bytes, and the one rule for an unavailable NVML
    bandwidth.py       mmap_touch_bandwidth, safetensors_load_bandwidth, serial_limit,
                       host_to_device_bandwidth (file_read_bandwidth: readinto, reference only)
    host_memory.py     what a load occupies in host memory, from /proc (anonymous / file-backed,
                       pages under live tensors, peak); page-cache eviction for a cold start
    fresh_process.py   FreshProcessServer: cold start and host memory in a fresh process
    dpo_bill.py        what a constructed DPOTrainer holds, read in that fresh process (the DPO bill)
    __main__.py        `python -m policyload.measure serve`, the server's internal command line

An unavailable measurement is recorded, never dropped: where NVML is missing or restricted,
`NvmlTracker.readout()` is `{"nvml_unavailable": "<ExceptionType>: <message>"}` (and
`device_description()` says the same), so the reason reaches every JSON that would have held the
numbers. None of these modules imports torch at import time.
"""

from .bandwidth import (
    MIB,
    file_read_bandwidth,
    host_to_device_bandwidth,
    mmap_touch_bandwidth,
    safetensors_load_bandwidth,
    serial_limit,
)
from .cuda_allocator import CudaAllocatorTracker
from .fresh_process import FreshProcessServer
from .latency import LatencyTracker, cuda_available, synchronize
from .nvml import (
    NvmlTracker,
    cuda_context_bytes,
    device_description,
    nvml_device_used_bytes,
    nvml_process_used_bytes,
    nvml_unavailable,
)
from .rss import RssTracker, peak_rss_bytes, reset_peak_rss, rss_bytes

__all__ = [
    "MIB",
    "CudaAllocatorTracker",
    "FreshProcessServer",
    "LatencyTracker",
    "NvmlTracker",
    "RssTracker",
    "cuda_available",
    "cuda_context_bytes",
    "device_description",
    "file_read_bandwidth",
    "host_to_device_bandwidth",
    "mmap_touch_bandwidth",
    "safetensors_load_bandwidth",
    "serial_limit",
    "nvml_device_used_bytes",
    "nvml_process_used_bytes",
    "nvml_unavailable",
    "peak_rss_bytes",
    "reset_peak_rss",
    "rss_bytes",
    "synchronize",
]
