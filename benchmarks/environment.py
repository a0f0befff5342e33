"""What a benchmark run measured on: library versions and the device. A plain module, imported by
the benchmarks' conftest (pytest-benchmark's `machine_info`, the report header) and by
`benchmarks/per_rank_vram.py` (its JSON document)."""

from __future__ import annotations

import os
import platform

LIBRARIES = ("torch", "transformers", "trl", "bitsandbytes", "accelerate", "peft", "policyload")


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def device_info() -> dict:
    """What the numbers were measured on: `device` is the key `policyload.report compare` checks.

    On CUDA without a usable NVML, `nvml_unavailable` gives the reason (see `policyload.measure.nvml`).
    """
    import torch

    from policyload.measure import device_description

    info = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        info.update(device_description())
        info["device"] = info.get("gpu_name") or torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    else:
        info["device"] = f"cpu ({info['cpu']}, {info['cpu_count']} cores)"
    return info
