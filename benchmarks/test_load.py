"""One benchmark per case: `load_policy(case.spec)`, timed by pytest-benchmark, with the
trackers' read-outs, the memory model's prediction, the cold start in a fresh process and the
physical bandwidth limit in `extra_info`."""

from __future__ import annotations

import dataclasses
import shutil
import statistics
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest

from policyload import Topology, load_policy
from policyload.load import release_memory
from policyload.measure import CudaAllocatorTracker, LatencyTracker, NvmlTracker
from policyload.memory_model import (
    DEVICE_HEADROOM_BYTES,
    HOST_HEADROOM_BYTES,
    fit_problem,
    measured_model_bytes,
    predict,
)


def checkpoint_folder(checkpoint) -> Path:
    """The local folder of a case's checkpoint, built or resolved; skips with the reason otherwise."""
    if checkpoint.kind == "tiny":
        return Path(checkpoint.source)
    if checkpoint.kind == "realsize":
        from fixtures.realsize import checkpoint_bytes, realsize_checkpoint

        folder = Path(checkpoint.source)
        if not folder.exists():
            free = shutil.disk_usage(folder.parent if folder.parent.exists() else Path.home()).free
            reason = fit_problem("disk to build the checkpoint", checkpoint_bytes(checkpoint.token), free)
            if reason:
                pytest.skip(reason)
        return realsize_checkpoint(checkpoint.token)
    if Path(checkpoint.source).is_dir():
        return Path(checkpoint.source)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(checkpoint.source, local_files_only=True))
    except Exception as error:
        pytest.skip(f"checkpoint {checkpoint.source!r} is neither a folder nor in the offline hub cache ({type(error).__name__})")


def skip_unless_fits(prediction, on_device: str | None) -> None:
    if on_device:
        import torch

        free, _ = torch.cuda.mem_get_info(on_device)
        reason = fit_problem(f"free memory on {on_device}", prediction.total_bytes + DEVICE_HEADROOM_BYTES, free)
    else:
        available = psutil.virtual_memory().available
        reason = fit_problem("available host memory", prediction.total_bytes + HOST_HEADROOM_BYTES, available)
    if reason:
        pytest.skip(reason)


def test_load(benchmark, case, rounds, fresh_process_server, read_bandwidth, host_to_device):
    spec = case.spec
    if spec.quantization != "none":
        pytest.importorskip("bitsandbytes", reason="requires bitsandbytes for 8-bit and 4-bit loading")
    from transformers import AutoConfig

    folder = checkpoint_folder(case.checkpoint)
    prediction = predict(spec, AutoConfig.from_pretrained(folder))
    topology = Topology.detect()
    # load_policy places only quantized models on the accelerator (TRL's kbit device map); the
    # others load on the host, as in the DPO recipe, and the trainer then moves them to the
    # device. "Usable" on a GPU therefore includes that move, which the timed call makes too.
    on_device = f"cuda:{topology.local_process_index}" if topology.accelerator == "cuda" else None
    skip_unless_fits(prediction, on_device)
    cuda = topology.accelerator == "cuda"
    device_name = f"cuda:{topology.local_process_index}" if cuda else None

    bandwidth = read_bandwidth(folder)
    cold = fresh_process_server.measure(dataclasses.asdict(spec))
    rounds_, warmup_rounds = rounds
    held: dict = {}
    samples: list[dict] = []

    def free_previous_model():
        held.clear()
        release_memory()
        return (), {}

    def load_once():
        with ExitStack() as stack:
            trackers = []
            if cuda:
                trackers.append(stack.enter_context(CudaAllocatorTracker(device_name)))
                try:
                    trackers.append(stack.enter_context(NvmlTracker(topology.local_process_index)))
                except Exception:  # nvidia-ml-py missing or NVML restricted: allocator numbers still stand
                    pass
            latency = stack.enter_context(LatencyTracker(device_name))
            trackers.append(latency)
            model = load_policy(spec, topology)
            held["model"] = model.to(device_name) if cuda and spec.quantization == "none" else model
        stack.close()
        sample = {}
        for tracker in trackers:
            sample.update(tracker.readout())
        samples.append(sample)

    try:
        benchmark.pedantic(load_once, setup=free_previous_model, rounds=rounds_, warmup_rounds=warmup_rounds)
        measured_bytes = measured_model_bytes(held["model"])
    finally:
        held.clear()
        release_memory()

    measured = samples[-rounds_:]
    latencies = [sample["latency_s"] for sample in measured]
    median_s = statistics.median(latencies)
    last = measured[-1]
    if on_device:
        memory = {
            "memory_source": "cuda allocator, this load alone",
            "peak_bytes": last["cuda_peak_allocated_bytes"],
            "resident_bytes": last["cuda_resident_allocated_bytes"],
        }
        ratio_bytes = last["cuda_resident_allocated_bytes"]
    else:
        memory = {
            "memory_source": "host RSS above baseline, fresh process",
            "peak_bytes": cold["peak_rss_during_load_bytes"],
            "resident_bytes": cold["rss_after_load_bytes"],
        }
        ratio_bytes = measured_bytes
    limits = {"page cache read": bandwidth["page_cache_read_bytes_per_s"]}
    if on_device and host_to_device:
        limits["host-to-device pageable copy"] = host_to_device["h2d_pageable_bytes_per_s"]
    limit_source = min(limits, key=limits.get)
    achieved = bandwidth["checkpoint_bytes"] / median_s
    benchmark.extra_info.update(
        {
            "case_id": case.id,
            "checkpoint": case.checkpoint.token,
            "checkpoint_kind": case.checkpoint.kind,
            "dtype": spec.dtype,
            "quantization": case.quantization,
            "device": on_device or "cpu",
            "rounds": rounds_,
            "warmup_rounds": warmup_rounds,
            "latency_s": latencies,
            "median_latency_s": median_s,
            **memory,
            **{key: value for key, value in last.items() if key != "latency_s"},
            "predicted_bytes": prediction.total_bytes,
            "prediction": prediction.to_dict(),
            "measured_bytes": ratio_bytes,
            "measured_tensor_bytes": measured_bytes,
            "measured_over_predicted": ratio_bytes / prediction.total_bytes,
            **{f"cold_{key}" if not key.startswith("cold_") else key: value for key, value in cold.items()},
            **bandwidth,
            **host_to_device,
            "bandwidth_limit_bytes_per_s": limits[limit_source],
            "bandwidth_limit_source": limit_source,
            "achieved_bytes_per_s": achieved,
            "bandwidth_fraction": achieved / limits[limit_source],
        }
    )
