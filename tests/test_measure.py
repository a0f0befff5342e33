"""The trackers, run for real on CPU; NVML with recorded readings; CUDA ones where there is CUDA."""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import mmap
import os
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from fixtures.checkpoints import tiny_checkpoint
from policyload import LoadSpec, load_policy
from policyload.load import release_memory
from policyload.measure import (
    CudaAllocatorTracker,
    FreshProcessServer,
    LatencyTracker,
    NvmlTracker,
    RssTracker,
    cuda_context_bytes,
    device_description,
    file_read_bandwidth,
    host_memory,
    host_to_device_bandwidth,
    rss_bytes,
)
from policyload.measure.fresh_process import cold_device_memory
from policyload.memory_model import layout_tensor_bytes

MIB = 1024**2
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="requires CUDA")


class FakeNvml:
    """pynvml's surface as NvmlTracker uses it, with readings given in order."""

    def __init__(self, used_readings, processes, name=b"NVIDIA H100 80GB HBM3", driver=b"550.54.15"):
        self.used_readings = list(used_readings)
        self.processes = processes
        self.name, self.driver = name, driver
        self.calls = []

    def nvmlInit(self):
        self.calls.append("init")

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlDeviceGetHandleByIndex(self, index):
        return f"handle{index}"

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=self.used_readings.pop(0), total=80 * 1024**3)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return self.processes

    def nvmlDeviceGetName(self, handle):
        return self.name

    def nvmlSystemGetDriverVersion(self):
        return self.driver


def test_nvml_tracker_subtracts_baseline_and_reports_context_apart():
    nvml = FakeNvml(
        used_readings=[1000 * MIB, 1800 * MIB],
        processes=[SimpleNamespace(pid=7, usedGpuMemory=300 * MIB), SimpleNamespace(pid=42, usedGpuMemory=900 * MIB)],
    )

    with NvmlTracker(0, nvml=nvml, pid=42, torch_reserved=lambda: 400 * MIB) as tracker:
        pass

    assert tracker.readout() == {
        "nvml_device_used_delta_bytes": 800 * MIB,
        "nvml_process_used_bytes": 900 * MIB,
        "cuda_context_bytes": 500 * MIB,
    }
    assert nvml.calls == ["init", "shutdown"]


def test_nvml_tracker_when_the_driver_hides_processes():
    nvml = FakeNvml(used_readings=[0, 10 * MIB], processes=[SimpleNamespace(pid=42, usedGpuMemory=None)])

    with NvmlTracker(0, nvml=nvml, pid=42, torch_reserved=lambda: 0) as tracker:
        pass

    assert tracker.readout() == {
        "nvml_device_used_delta_bytes": 10 * MIB,
        "nvml_process_used_bytes": None,
        "cuda_context_bytes": None,
    }


def test_cuda_context_is_never_negative():
    assert (cuda_context_bytes(100, 300), cuda_context_bytes(None, 3), cuda_context_bytes(500, 300)) == (0, None, 200)


def test_device_description_decodes_nvml_bytes():
    description = device_description(FakeNvml(used_readings=[0], processes=[]))

    assert description == {
        "gpu_name": "NVIDIA H100 80GB HBM3", "gpu_driver": "550.54.15", "gpu_total_bytes": 80 * 1024**3
    }


class NoDriver:
    """pynvml where the NVIDIA driver's library is absent: `nvmlInit` raises."""

    def __init__(self):
        self.calls = []

    def nvmlInit(self):
        self.calls.append("init")
        raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        self.calls.append("shutdown")


class Restricted(FakeNvml):
    """pynvml in a container that initialises but refuses the process list."""

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        raise PermissionError("Insufficient Permissions")


NO_DRIVER_REASON = "RuntimeError: NVML Shared Library Not Found"


def test_device_description_without_nvml_gives_the_reason():
    """Was `{}`: an unavailable NVML is now recorded with its reason, as `NvmlTracker` records it."""
    assert device_description(NoDriver()) == {"nvml_unavailable": NO_DRIVER_REASON}


def test_nvml_tracker_without_nvml_records_the_reason_and_never_raises():
    nvml = NoDriver()

    with NvmlTracker(0, nvml=nvml, pid=42, torch_reserved=lambda: 0) as tracker:
        pass

    assert tracker.readout() == {"nvml_unavailable": NO_DRIVER_REASON}
    assert nvml.calls == ["init"]


def test_nvml_tracker_without_pynvml_records_the_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` now raises ModuleNotFoundError

    with NvmlTracker(0, pid=42, torch_reserved=lambda: 0) as tracker:
        pass

    assert list(tracker.readout()) == ["nvml_unavailable"]
    assert tracker.readout()["nvml_unavailable"].startswith("ModuleNotFoundError: import of pynvml halted")


def test_nvml_tracker_when_nvml_refuses_a_reading_records_the_reason_and_shuts_down():
    nvml = Restricted(used_readings=[0, 10 * MIB], processes=[])

    with NvmlTracker(0, nvml=nvml, pid=42, torch_reserved=lambda: 0) as tracker:
        pass

    assert tracker.readout() == {"nvml_unavailable": "PermissionError: Insufficient Permissions"}
    assert nvml.calls == ["init", "shutdown"]


def test_cold_start_records_why_nvml_is_unavailable(monkeypatch):
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 123)

    columns = cold_device_memory("cuda:0", 0, nvml=NoDriver())

    assert columns == {"cold_nvml_unavailable": NO_DRIVER_REASON, "cold_cuda_allocated_bytes": 123}


def test_cold_start_keeps_the_process_share_and_context_of_nvml(monkeypatch):
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 400 * MIB)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 512 * MIB)
    nvml = FakeNvml(used_readings=[0, 0], processes=[SimpleNamespace(pid=os.getpid(), usedGpuMemory=900 * MIB)])

    columns = cold_device_memory("cuda:0", 0, nvml=nvml)

    assert columns == {
        "cold_nvml_process_used_bytes": 900 * MIB,
        "cold_cuda_context_bytes": 388 * MIB,
        "cold_cuda_allocated_bytes": 400 * MIB,
    }


def test_latency_tracker_covers_the_block():
    with LatencyTracker() as latency:
        time.sleep(0.05)

    assert latency.seconds >= 0.05


def test_rss_tracker_sees_a_block_allocation():
    with RssTracker() as rss:
        block = bytearray(64 * MIB)
        block[:: 4096] = b"x" * len(block[:: 4096])  # touch every page

    readout = rss.readout()
    assert readout["rss_after_load_bytes"] >= 60 * MIB
    assert readout["peak_rss_during_load_bytes"] >= readout["rss_after_load_bytes"]
    del block


def test_file_read_bandwidth_reads_the_whole_checkpoint():
    files = sorted(tiny_checkpoint("llama").glob("*.safetensors"))

    result = file_read_bandwidth(files, min_bytes=4 * MIB)

    assert result["checkpoint_bytes"] == sum(f.stat().st_size for f in files)
    assert result["first_read_bytes_per_s"] > 0 and result["page_cache_read_bytes_per_s"] > 0


# The tiny Llama of fixtures/checkpoints.py (vocab 256, hidden 64, intermediate 128, 2 layers, 4
# heads of 16, 2 key/value heads: k/v width 32, untied lm_head) loaded in bfloat16 with 4-bit nf4,
# counted by hand from the architecture, not from the memory model the benchmarks use:
#   quantized: per layer q 64*64 + k 64*32 + v 64*32 + o 64*64 + gate/up/down 3 * 64*128
#              = 4096 + 2048 + 2048 + 4096 + 24576 = 36864 weights; 2 layers: 73728 weights
#     packed 2 per byte (uint8 storage):                 73728 / 2             = 36864 bytes
#     one fp32 absmax per 64 weights:                    73728 / 64 * 4        =  4608 bytes
#     one 16-entry fp32 nf4 code table per layer:        14 layers * 16 * 4    =   896 bytes
#   unquantized, bfloat16: embed 256*64 + lm_head 256*64 + norms (2 per layer + final) 5*64
#                          = 16384 + 16384 + 320 = 33088 parameters * 2        = 66176 bytes
#   buffers, fp32: rotary inv_freq and original_inv_freq, 16 / 2 = 8 each:  2 * 8 * 4 = 64 bytes
TINY_LLAMA_BF16_4BIT_NF4_BYTES = 36864 + 4608 + 896 + 66176 + 64  # = 108608


def test_layout_of_the_tiny_llama_in_4bit_is_the_hand_count():
    """The layout check (tensor storage, quantization state included) against the count above."""
    model = load_policy(LoadSpec(str(tiny_checkpoint("llama")), dtype="bfloat16", load_in_4bit=True))
    assert layout_tensor_bytes(model) == TINY_LLAMA_BF16_4BIT_NF4_BYTES


def test_fresh_process_server_measures_a_cold_load_and_reports_failures():
    spec = LoadSpec(str(tiny_checkpoint("llama")), dtype="bfloat16", load_in_4bit=True)

    with FreshProcessServer() as server:
        cold = server.measure(dataclasses.asdict(spec))
        with pytest.raises(RuntimeError, match="fresh-process load failed: CheckpointError"):
            server.measure(dataclasses.asdict(LoadSpec(str(tiny_checkpoint("llama")) + "-absent")))
        again = server.measure(dataclasses.asdict(spec))

    assert server.import_s > 0
    assert cold["cold_first_load_s"] > 0
    assert cold["cold_page_cache_evicted"] is True and "POSIX_FADV_DONTNEED" in cold["cold_meaning"]
    for reading in (cold, again):
        # Read from /proc, page-granular; the tiny model is ~100 KiB of bf16 file pages.
        assert reading["host_file_referenced_bytes"] % reading["host_page_bytes"] == 0
        assert reading["host_peak_bytes"] >= reading["host_anon_bytes"]
    assert cold["peak_rss_during_load_bytes"] >= cold["rss_after_load_bytes"] > 0


def test_cuda_allocator_tracker_subtracts_the_baseline(monkeypatch):
    readings = {"allocated": [100, 700], "reserved": [1000, 3000], "max_allocated": 900, "max_reserved": 3000}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: readings["allocated"].pop(0))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: readings["reserved"].pop(0))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: readings["max_allocated"])
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: readings["max_reserved"])

    with CudaAllocatorTracker("cuda:0") as tracker:
        pass

    assert tracker.readout() == {
        "cuda_peak_allocated_bytes": 800,
        "cuda_resident_allocated_bytes": 600,
        "cuda_peak_reserved_bytes": 2000,
        "cuda_resident_reserved_bytes": 2000,
    }


@requires_cuda
def test_cuda_allocator_tracker_on_a_real_allocation():
    with CudaAllocatorTracker("cuda:0") as tracker:
        block = torch.empty(64 * MIB, dtype=torch.uint8, device="cuda:0")

    assert tracker.readout()["cuda_resident_allocated_bytes"] == 64 * MIB
    del block


@requires_cuda
def test_host_to_device_bandwidth_on_cuda():
    result = host_to_device_bandwidth(nbytes=16 * MIB, repeats=2)

    assert set(result) == {"h2d_pinned_bytes_per_s", "h2d_pageable_bytes_per_s"}


def live_tensor_count() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def test_memory_returns_to_baseline_between_loads():
    """Many load/free cycles in this process: no tensor survives a cycle and RSS stays flat.

    Measured on the 2-core CPU machine: RSS grows ~2.4 KB per load (transformers/Python
    bookkeeping, not tensors), i.e. ~1% of the bytes loaded over these cycles. A leaked model
    every tenth load would add 10% of them, so the bound is 5%; the tensor count is exact.
    """
    specs = [
        LoadSpec(str(tiny_checkpoint(architecture)), dtype="float32", **fields)
        for architecture in ("llama", "gpt2")
        for fields in ({}, {"load_in_8bit": True}, {"load_in_4bit": True, "use_bnb_nested_quant": True})
    ]

    def cycle() -> int:
        loaded = 0
        for spec in specs:
            model = load_policy(spec)
            loaded += sum(p.numel() * p.element_size() for p in model.parameters())
            del model
            release_memory()
        return loaded

    for _ in range(3):  # warm-up: lazy imports, kernels, allocator arenas
        cycle()
    tensors_before, rss_before = live_tensor_count(), rss_bytes()
    loaded = sum(cycle() for _ in range(20))
    tensors_after, rss_after = live_tensor_count(), rss_bytes()

    assert tensors_after == tensors_before
    assert rss_after - rss_before < 0.05 * loaded, f"RSS grew {rss_after - rss_before} B over {loaded} B loaded"


def test_proc_status_reads_the_resident_split(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nRssAnon:\t 512 kB\nRssFile:\t 500 kB\n"
                      "RssShmem:\t 12 kB\n")

    assert host_memory.proc_status(str(status)) == {
        "peak": 2048 * 1024, "rss": 1024 * 1024, "anon": 512 * 1024, "file": 500 * 1024, "shmem": 12 * 1024,
    }


def test_file_backed_resident_bytes_counts_present_pages_of_mapped_files_only(tmp_path):
    page = host_memory.PAGE
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\1" * (64 * page))
    assert host_memory.evict_from_page_cache([path]) is True
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    # The mapping's address from /proc/self/maps (the only mapping of this file).
    (start, end), = [(lo, hi) for lo, hi, name in host_memory.file_mappings() if name == str(path)]
    assert end - start == 64 * page

    half = [(start, 32 * page)]
    sum(mapped[i] for i in range(0, 32 * page, page))  # fault in the first half

    assert host_memory.file_backed_resident_bytes(half) == 32 * page
    anonymous = bytearray(8 * page)
    anonymous_address = ctypes.addressof((ctypes.c_char * len(anonymous)).from_buffer(anonymous))
    assert host_memory.file_backed_resident_bytes([(anonymous_address, len(anonymous))]) == 0
    mapped.close()


def test_touch_and_storages_of_a_real_model_cover_its_tensors():
    model = torch.nn.Linear(1024, 256)  # 1 MiB of fp32 weight + bias
    storages = host_memory.live_storages(model)
    host_memory.touch(storages)

    assert sorted(size for _, size in storages) == [256 * 4, 1024 * 256 * 4]


def test_fresh_process_host_memory_comes_from_a_warmed_up_child():
    """With a warm-up checkpoint the host figures are read in a second child that ran the load path
    first: the first load's lazy imports and re-faulted library code leave its peak, which is then
    the model's (a ~100 KiB tiny model: far below the cold child's peak of tens of MiB)."""
    path = str(tiny_checkpoint("llama"))
    spec = dataclasses.asdict(LoadSpec(path, dtype="bfloat16", load_in_4bit=True))
    with FreshProcessServer() as server:
        cold = server.measure(spec)
        warm = server.measure(spec, warmup_path=path)
    assert cold["host_warmup_checkpoint"] is None and warm["host_warmup_checkpoint"] == path
    assert warm["cold_first_load_s"] > 0 and warm["cold_page_cache_evicted"] is True
    print(f"peak cold {cold['host_peak_bytes'] / MIB:.1f} MiB, warmed up {warm['host_peak_bytes'] / MIB:.1f} MiB")
    assert warm["host_peak_bytes"] < cold["host_peak_bytes"] / 2
