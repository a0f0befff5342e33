"""Device memory as the driver sees it, through NVML (`pynvml`, from nvidia-ml-py): what a load
costs on the GPU beyond torch's allocator (CUDA context, kernels, cuBLAS), and which GPU it was.

The one rule for an unavailable NVML lives here: where `pynvml` is missing, NVML cannot be
initialised (no driver, a container without its library) or refuses a reading (restricted), the
tracker does not raise. Its read-out is then `{"nvml_unavailable": "<ExceptionType>: <message>"}`
and its numbers are absent, so every caller just enters it and records its read-out, and the
reason lands where the numbers would have been. `device_description` follows the same rule.
"""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager, suppress

UNAVAILABLE_KEY = "nvml_unavailable"


def nvml_unavailable(error: BaseException) -> dict:
    """The read-out of an NVML measurement that could not be taken: its reason, and no numbers."""
    return {UNAVAILABLE_KEY: f"{type(error).__name__}: {error}"}


@contextmanager
def nvml_session(nvml=None):
    """`pynvml` (or the stand-in `nvml`) initialised for the block, shut down after it."""
    if nvml is None:
        import pynvml as nvml
    nvml.nvmlInit()
    try:
        yield nvml
    finally:
        nvml.nvmlShutdown()


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

    `nvml` is the `pynvml` module (nvidia-ml-py), imported on entry; tests pass a stand-in with
    recorded readings. Never raises for a missing or restricted NVML: see the module docstring.
    """

    def __init__(self, device_index: int = 0, nvml=None, pid: int | None = None, torch_reserved=None):
        self.nvml = nvml
        self.device_index = device_index
        self.pid = os.getpid() if pid is None else pid
        self._torch_reserved = torch_reserved or self._read_torch_reserved
        self.values: dict = {}

    def _read_torch_reserved(self) -> int:
        import torch

        return torch.cuda.memory_reserved(self.device_index)

    def __enter__(self) -> NvmlTracker:
        self.values, self._session = {}, ExitStack()
        try:
            self._nvml = self._session.enter_context(nvml_session(self.nvml))
            self._handle = self._nvml.nvmlDeviceGetHandleByIndex(self.device_index)
            self._used = nvml_device_used_bytes(self._nvml, self._handle)
        except Exception as error:  # missing, uninitialisable or restricted NVML: recorded, not raised
            self._unavailable(error)
        return self

    def __exit__(self, *exc) -> None:
        if UNAVAILABLE_KEY in self.values:
            return
        try:
            process_used = nvml_process_used_bytes(self._nvml, self._handle, self.pid)
            device_used = nvml_device_used_bytes(self._nvml, self._handle)
        except Exception as error:  # NVML refused the reading after the block: recorded, not raised
            self._unavailable(error)
            return
        with self._session:
            self.values = {
                "nvml_device_used_delta_bytes": device_used - self._used,
                "nvml_process_used_bytes": process_used,
                "cuda_context_bytes": cuda_context_bytes(process_used, self._torch_reserved()),
            }

    def _unavailable(self, error: Exception) -> None:
        self.values = nvml_unavailable(error)
        with suppress(Exception):  # shutting a half-open NVML down may fail too; the first reason stands
            self._session.close()

    def readout(self) -> dict:
        return dict(self.values)


def device_description(nvml=None) -> dict:
    """Name, driver and memory of GPU 0 from NVML, or `{"nvml_unavailable": reason}` where NVML
    cannot say (the same rule as `NvmlTracker`)."""
    try:
        with nvml_session(nvml) as nvml:
            handle = nvml.nvmlDeviceGetHandleByIndex(0)
            name = nvml.nvmlDeviceGetName(handle)
            driver = nvml.nvmlSystemGetDriverVersion()
            total = int(nvml.nvmlDeviceGetMemoryInfo(handle).total)
    except Exception as error:  # missing, uninitialisable or restricted NVML: recorded, not raised
        return nvml_unavailable(error)

    def decode(value):
        return value.decode() if isinstance(value, bytes) else value

    return {"gpu_name": decode(name), "gpu_driver": decode(driver), "gpu_total_bytes": total}
