"""What a benchmark case writes about memory: a figure read from the machine or "n/a", never a
ratio of the model's own tensors to the prediction."""

from __future__ import annotations

import pytest

from benchmarks.test_load import MEASURABLE_MIN_BYTES, bandwidth_columns, prediction_columns
from fixtures.checkpoints import tiny_checkpoint
from policyload import LoadSpec
from policyload.measure import mmap_touch_bandwidth, safetensors_load_bandwidth, serial_limit
from policyload.memory_model import Prediction

MIB = 1024**2


def prediction(checkpoint_bytes: int) -> Prediction:
    # A bf16 load of a bf16 checkpoint: 900 MiB file-backed, 1 MiB of private buffers.
    return Prediction(
        quantized_weight_bytes=0, quant_state_bytes=0, unquantized_parameter_bytes=900 * MIB,
        buffer_bytes=1 * MIB, quantized_parameters=0, unquantized_parameters=450 * MIB,
        file_backed_bytes=900 * MIB, checkpoint_bytes=checkpoint_bytes,
    )


def test_cpu_figure_is_private_plus_file_backed_pages_under_live_tensors():
    cold = {"host_anon_bytes": 10 * MIB, "host_file_referenced_bytes": 900 * MIB, "host_peak_bytes": 950 * MIB}

    columns = prediction_columns(prediction(901 * MIB), {}, cold, layout_bytes=901 * MIB, device=None)

    assert columns["memory_measured_bytes"] == 910 * MIB
    assert columns["memory_measured_anon_bytes"] == 10 * MIB
    assert columns["memory_measured_file_bytes"] == 900 * MIB
    assert columns["memory_predicted_bytes"] == 901 * MIB
    assert columns["memory_predicted_anon_bytes"] == 1 * MIB
    assert columns["memory_peak_predicted_bytes"] == 902 * MIB  # the file + private buffers
    assert columns["measured_over_predicted"] == 910 / 901
    assert columns["peak_measured_over_predicted"] == 950 / 902
    assert columns["memory_measured_source"].startswith("host /proc")
    assert columns["layout_tensor_over_predicted"] == 1.0


def test_tiny_checkpoints_are_not_measurable_rather_than_a_ratio():
    cold = {"host_anon_bytes": 12 * MIB, "host_file_referenced_bytes": 4096, "host_peak_bytes": 70 * MIB}

    columns = prediction_columns(prediction(300 * 1024), {}, cold, layout_bytes=300 * 1024, device=None)

    assert 300 * 1024 < MEASURABLE_MIN_BYTES
    assert columns["memory_measured_bytes"] is None and columns["memory_peak_measured_bytes"] is None
    assert columns["measured_over_predicted"] is None and columns["peak_measured_over_predicted"] is None
    assert columns["memory_measured_source"] == (
        "n/a: checkpoint below measurable size (300 KiB; host figures are read from 64 MiB up)"
    )


def test_gpu_figure_is_the_allocators():
    last = {"cuda_resident_allocated_bytes": 902 * MIB, "cuda_peak_allocated_bytes": 904 * MIB}

    columns = prediction_columns(prediction(901 * MIB), last, {}, layout_bytes=901 * MIB, device="cuda:0")

    assert columns["memory_measured_bytes"] == 902 * MIB
    assert columns["memory_peak_predicted_bytes"] == 901 * MIB  # device peak: result, no transient
    assert columns["memory_measured_source"].startswith("cuda allocator")


def bandwidth(checkpoint_bytes):
    return {"checkpoint_bytes": checkpoint_bytes, "mmap_touch_bytes_per_s": 10e9, "page_cache_read_bytes_per_s": 20e9}


def test_serial_bound_on_a_gpu_not_the_lower_stage():
    spec = LoadSpec("unused", dtype="bfloat16")

    columns = bandwidth_columns(bandwidth(1000 * MIB), {"h2d_pageable_bytes_per_s": 40e9}, "cuda:0", 0.5, spec)

    assert serial_limit(10e9, 40e9) == pytest.approx(8e9)  # 1 / (1/10 + 1/40) GB/s, not min = 10
    assert columns["bandwidth_limit_bytes_per_s"] == pytest.approx(8e9)
    assert columns["bandwidth_fraction"] == pytest.approx(1000 * MIB / 0.5 / 8e9)
    assert columns["bandwidth_limit_source"].startswith("serial")


def test_cpu_limit_is_the_mmap_path():
    columns = bandwidth_columns(bandwidth(1000 * MIB), {}, None, 0.5, LoadSpec("unused", dtype="bfloat16"))

    assert columns["bandwidth_limit_bytes_per_s"] == 10e9
    assert columns["bandwidth_fraction"] == pytest.approx(1000 * MIB / 0.5 / 10e9)


@pytest.mark.parametrize(
    ("checkpoint_bytes", "quantization", "reason"),
    [(300 * 1024, {}, "n/a: checkpoint below 64 MiB"), (1000 * MIB, {"load_in_8bit": True}, "n/a: quantizing")],
)
def test_fraction_is_na_where_it_means_nothing(checkpoint_bytes, quantization, reason):
    spec = LoadSpec("unused", dtype="bfloat16", **quantization)

    columns = bandwidth_columns(bandwidth(checkpoint_bytes), {}, None, 0.5, spec)

    assert columns["bandwidth_fraction"] is None
    assert columns["bandwidth_fraction_note"].startswith(reason)


def test_mmap_touch_and_load_file_bandwidths_are_measured():
    files = sorted(tiny_checkpoint("llama").glob("*.safetensors"))

    assert mmap_touch_bandwidth(files, min_bytes=4 * MIB)["mmap_touch_bytes_per_s"] > 0
    assert safetensors_load_bandwidth(files)["safetensors_load_file_bytes_per_s"] > 0
