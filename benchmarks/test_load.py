"""One benchmark per case: `load_policy(case.spec)`, timed by pytest-benchmark, with in
`extra_info` the trackers' read-outs, memory read from the machine (the CUDA allocator; on CPU the
fresh process's /proc figures) against the memory model's resident and peak prediction, every
other estimator (policyload.estimators) against the same figure, the cold start (page cache
evicted) and the bandwidth limit of the load's own path. Every case's outcome, failures
included, is recorded by the conftest (`policyload_outcomes`)."""

from __future__ import annotations

import dataclasses
import shutil
import statistics
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest

from policyload import Topology, load_policy
from policyload.estimators import accelerate_fp32_total, estimates
from policyload.load import release_memory
from policyload.measure import CudaAllocatorTracker, LatencyTracker, NvmlTracker, serial_limit
from policyload.memory_model import (
    DEVICE_HEADROOM_BYTES,
    HOST_HEADROOM_BYTES,
    fit_problem,
    layout_tensor_bytes,
    predict,
)

MIB = 1024**2
#: Below this checkpoint size a host-memory figure is not a reading of the model: pages are 4 KiB,
#: the heap reuses and retains memory, libraries page in lazily (10-40 MiB of noise per process on
#: the 2-core machine), so the model's bytes would be a small share of what moved.
MEASURABLE_MIN_BYTES = 64 * MIB
HOST_MEASUREMENT = (
    "host /proc, fresh process warmed up on a tiny checkpoint of the same architecture, baseline "
    "subtracted, after a forward pass and a read of every page: "
    "RssAnon after gc + malloc_trim, plus file-backed pages present under live tensors (pagemap); "
    "peak: VmHWM above the baseline RSS"
)
DEVICE_MEASUREMENT = "cuda allocator: allocated bytes of this load (resident after it, peak during it)"


def warmup_checkpoint(config, prediction, device) -> str | None:
    """The tiny checkpoint of the case's architecture the fresh process warms up on before reading
    host memory (`policyload.measure.fresh_process`), where host memory is the figure: CPU, a
    measurable checkpoint, an architecture with a tiny fixture. None: host figures from the cold child."""
    from fixtures.checkpoints import TINY_ARCHITECTURES, tiny_checkpoint

    if device or prediction.checkpoint_bytes < MEASURABLE_MIN_BYTES or config.model_type not in TINY_ARCHITECTURES:
        return None
    return str(tiny_checkpoint(config.model_type))


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
        pytest.skip(
            f"checkpoint {checkpoint.source!r} is neither a folder nor in the offline hub cache "
            f"({type(error).__name__})"
        )


def skip_unless_fits(prediction, on_device: str | None) -> None:
    """Skip when the predicted peak (loads die at the peak, not at the resident size) does not fit."""
    if on_device:
        import torch

        free, _ = torch.cuda.mem_get_info(on_device)
        reason = fit_problem(f"free memory on {on_device}", prediction.device_peak_bytes + DEVICE_HEADROOM_BYTES, free)
    else:
        available = psutil.virtual_memory().available
        reason = fit_problem("available host memory", prediction.peak_bytes + HOST_HEADROOM_BYTES, available)
    if reason:
        pytest.skip(reason)


def round_trackers(stack: ExitStack, device: str | None, device_index: int) -> list:
    """Enter the trackers of one round on `stack`: on CUDA the allocator's and NVML's (whose
    read-out is the reason where NVML is unavailable), then the latency's, innermost."""
    trackers = [CudaAllocatorTracker(device), NvmlTracker(device_index)] if device else []
    trackers.append(LatencyTracker(device))
    return [stack.enter_context(tracker) for tracker in trackers]


def benchmark_loads(benchmark, spec, topology: Topology, device: str | None, rounds: tuple[int, int]):
    """Time `load_policy(spec)` with pytest-benchmark, each round's model freed before the next
    round: (the trackers' read-outs of the measured rounds, the loaded model's tensor bytes: a layout check).

    On a device the timed call includes moving a not-quantized model there (see `test_load`)."""
    rounds_, warmup_rounds = rounds
    held: dict = {}
    samples: list[dict] = []

    def free_previous_model():
        held.clear()
        release_memory()
        return (), {}

    def load_once():
        with ExitStack() as stack:
            trackers = round_trackers(stack, device, topology.local_process_index)
            model = load_policy(spec, topology)
            held["model"] = model.to(device) if device and spec.quantization == "none" else model
        samples.append({key: value for tracker in trackers for key, value in tracker.readout().items()})

    try:
        benchmark.pedantic(load_once, setup=free_previous_model, rounds=rounds_, warmup_rounds=warmup_rounds)
        layout_bytes = layout_tensor_bytes(held["model"])
    finally:
        held.clear()
        release_memory()
    return samples[-rounds_:], layout_bytes


def case_columns(case, device: str | None, rounds: tuple[int, int]) -> dict:
    rounds_, warmup_rounds = rounds
    return {
        "case_id": case.id,
        "checkpoint": case.checkpoint.token,
        "checkpoint_kind": case.checkpoint.kind,
        "dtype": case.spec.dtype,
        "quantization": case.quantization,
        "device": device or "cpu",
        "rounds": rounds_,
        "warmup_rounds": warmup_rounds,
    }


def latency_columns(samples: list[dict]) -> dict:
    latencies = [sample["latency_s"] for sample in samples]
    return {"latency_s": latencies, "median_latency_s": statistics.median(latencies)}


def memory_columns(last: dict, cold: dict, device: str | None) -> dict:
    """Peak and resident bytes of the load: the allocator's on a device, else the fresh process's RSS."""
    if device:
        return {
            "memory_source": "cuda allocator, this load alone",
            "peak_bytes": last["cuda_peak_allocated_bytes"],
            "resident_bytes": last["cuda_resident_allocated_bytes"],
        }
    return {
        "memory_source": "host RSS above baseline, fresh process",
        "peak_bytes": cold["peak_rss_during_load_bytes"],
        "resident_bytes": cold["rss_after_load_bytes"],
    }


def tracker_columns(last: dict) -> dict:
    """The last round's tracker read-outs as they are (its latency is in `latency_s` already)."""
    return {key: value for key, value in last.items() if key != "latency_s"}


def _ratio(numerator, denominator):
    return None if numerator is None or not denominator else numerator / denominator


def not_measurable(checkpoint_bytes: int) -> str:
    """The source of a host figure that is not read, for a checkpoint below `MEASURABLE_MIN_BYTES`."""
    return (
        f"n/a: checkpoint below measurable size ({checkpoint_bytes / 1024:.0f} KiB; "
        f"host figures are read from {MEASURABLE_MIN_BYTES // MIB} MiB up)"
    )


def prediction_columns(prediction, last: dict, cold: dict, layout_bytes: int, device: str | None) -> dict:
    """The memory model against a measurement read from the machine: the CUDA allocator on a device;
    on CPU the fresh process's /proc figures (private + file-backed pages live tensors use, and the
    peak), or "n/a" below `MEASURABLE_MIN_BYTES`. The tensor sum is a layout check, apart."""
    if device:
        measured, peak = last["cuda_resident_allocated_bytes"], last["cuda_peak_allocated_bytes"]
        predicted_peak, source, split = prediction.device_peak_bytes, DEVICE_MEASUREMENT, {}
    else:
        predicted_peak = prediction.peak_bytes
        if prediction.checkpoint_bytes < MEASURABLE_MIN_BYTES:
            measured = peak = None
            source = not_measurable(prediction.checkpoint_bytes)
            split = {}
        else:
            anon, file = cold["host_anon_bytes"], cold["host_file_referenced_bytes"]
            measured, peak, source = anon + file, cold["host_peak_bytes"], HOST_MEASUREMENT
            split = {"memory_measured_anon_bytes": anon, "memory_measured_file_bytes": file}
        split.update(
            memory_predicted_anon_bytes=prediction.anon_bytes,
            memory_predicted_file_bytes=prediction.file_backed_bytes,
        )
    return {
        "predicted_bytes": prediction.total_bytes,
        "prediction": prediction.to_dict(),
        "memory_measured_bytes": measured,
        "memory_measured_source": source,
        "memory_predicted_bytes": prediction.total_bytes,
        "memory_peak_measured_bytes": peak,
        "memory_peak_predicted_bytes": predicted_peak,
        **split,
        "measured_over_predicted": _ratio(measured, prediction.total_bytes),
        "peak_measured_over_predicted": _ratio(peak, predicted_peak),
        # A layout check, not a measurement: the loaded model's own tensors against the prediction.
        "layout_tensor_bytes": layout_bytes,
        "layout_tensor_over_predicted": _ratio(layout_bytes, prediction.total_bytes),
    }


_ACCELERATE_FP32: dict[str, int] = {}


def estimate_columns(spec, config, folder: Path, cold: dict, prediction, measured: int | None) -> dict:
    """Every estimator a user would reach for (policyload.estimators), and each one's error
    against the measured resident figure (None where that is not measurable)."""
    key = str(folder)
    if key not in _ACCELERATE_FP32:
        _ACCELERATE_FP32[key] = accelerate_fp32_total(config)
    values = estimates(
        spec, config, folder, cold.get("get_memory_footprint_bytes"), prediction.total_bytes, _ACCELERATE_FP32[key]
    )
    errors = {
        name: None if value is None or not measured else value / measured - 1 for name, value in values.items()
    }
    return {"memory_estimates": values, "memory_estimate_errors": errors}


def cold_columns(cold: dict) -> dict:
    """The fresh process's numbers, each under a `cold_` name."""
    return {key if key.startswith("cold_") else f"cold_{key}": value for key, value in cold.items()}


def bandwidth_columns(
    bandwidth: dict, host_to_device: dict, device: str | None, median_s: float, spec
) -> dict:
    """The limit of the path the load takes and the fraction of it the load achieved, or "n/a" with
    the reason where the fraction means nothing (tiny checkpoints, quantization-bound loads).

    The path: map the file and fault its pages in (`mmap_touch_bytes_per_s`); on a GPU then a
    pageable host-to-device copy, the stages taken as serial (their overlap is not measured)."""
    read = bandwidth["mmap_touch_bytes_per_s"]
    if device and host_to_device and spec.quantization == "none":
        limit = serial_limit(read, host_to_device["h2d_pageable_bytes_per_s"])
        source = "serial: mmap + touch from the page cache, then host-to-device pageable copy (overlap not measured)"
    else:
        limit, source = read, "mmap + touch from the page cache (the safetensors load path)"
    achieved = bandwidth["checkpoint_bytes"] / median_s
    note = None
    if bandwidth["checkpoint_bytes"] < MEASURABLE_MIN_BYTES:
        note = f"n/a: checkpoint below {MEASURABLE_MIN_BYTES // MIB} MiB, a load is fixed overhead, not bytes"
    elif spec.quantization != "none":
        note = "n/a: quantizing at load time is compute, not reading (100-280x a bf16 load on CPU)"
    return {
        **bandwidth,
        **host_to_device,
        "bandwidth_limit_bytes_per_s": limit,
        "bandwidth_limit_source": source,
        "achieved_bytes_per_s": achieved,
        "bandwidth_fraction": None if note else achieved / limit,
        "bandwidth_fraction_note": note,
    }


def test_load(benchmark, case, rounds, fresh_process_server, read_bandwidth, host_to_device):
    spec = case.spec
    if spec.quantization != "none":
        pytest.importorskip("bitsandbytes", reason="requires bitsandbytes for 8-bit and 4-bit loading")
    from transformers import AutoConfig

    folder = checkpoint_folder(case.checkpoint)
    config = AutoConfig.from_pretrained(folder)
    prediction = predict(spec, config, checkpoint=folder)
    topology = Topology.detect()
    # load_policy places only quantized models on the accelerator (TRL's kbit device map); the
    # others load on the host, as in the DPO recipe, and the trainer then moves them to the
    # device. "Usable" on a GPU therefore includes that move, which the timed call makes too.
    device = topology.device if topology.accelerator == "cuda" else None
    skip_unless_fits(prediction, device)

    bandwidth = read_bandwidth(folder)
    cold = fresh_process_server.measure(dataclasses.asdict(spec), warmup_checkpoint(config, prediction, device))
    samples, layout_bytes = benchmark_loads(benchmark, spec, topology, device, rounds)

    last = samples[-1]
    latency = latency_columns(samples)
    memory = prediction_columns(prediction, last, cold, layout_bytes, device)
    benchmark.extra_info.update(
        {
            **case_columns(case, device, rounds),
            **latency,
            **memory_columns(last, cold, device),
            **tracker_columns(last),
            **memory,
            **estimate_columns(spec, config, folder, cold, prediction, memory["memory_measured_bytes"]),
            **cold_columns(cold),
            **bandwidth_columns(bandwidth, host_to_device, device, latency["median_latency_s"], spec),
        }
    )
