"""The DPO load bill, measured: what TRL's DPOTrainer holds once its `__init__` returns, per case of
`benchmarks/dpo_cases.py`, against the planner (`policyload.plan.bill`).

Each case builds the trainer as the recipe does in a fresh process (`policyload.measure.dpo_bill`),
once, after warming that process up on the tiny checkpoint of the same architecture where host
memory is the figure (as the load benchmark does). The latency is that construction (`dpo_init_s`:
loads, adapter, reference, data set tokenization, precomputing where asked); the memory is what the
process holds afterwards, read from the machine (CPU: private memory + file-backed pages under the
live tensors, and VmHWM; CUDA: the allocator). `extra_info["dpo_bill"]` has the planned and the
measured bill, per component where the machine can tell components apart, and the measured total
over the planned one. `python -m benchmarks.check_dpo_bill JSON` holds the planner to it.
"""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.test_load import (
    HOST_MEASUREMENT,
    MEASURABLE_MIN_BYTES,
    checkpoint_folder,
    not_measurable,
    warmup_checkpoint,
)
from fixtures.preference_data import ROWS
from policyload import Topology
from policyload.memory_model import checkpoint_layout, predict
from policyload.plan import bill, plan_dpo_loads

DEVICE_MEASUREMENT = "cuda allocator: allocated bytes once the trainer is constructed (peak: during __init__)"


def measured_bill(reply: dict, checkpoint_bytes: int, on_device: bool) -> dict:
    """The bill as the machine reads it, or its absence with the reason (tiny checkpoints on CPU)."""
    if on_device:
        return {
            "total_bytes": reply["dpo_cuda_allocated_bytes"],
            "peak_bytes": reply["dpo_cuda_peak_allocated_bytes"],
            "source": DEVICE_MEASUREMENT,
        }
    if checkpoint_bytes < MEASURABLE_MIN_BYTES:
        return {"total_bytes": None, "peak_bytes": None, "source": not_measurable(checkpoint_bytes)}
    anon, file = reply["dpo_host_anon_bytes"], reply["dpo_host_file_referenced_bytes"]
    return {
        "total_bytes": anon + file,
        "peak_bytes": reply["dpo_host_peak_bytes"],
        "anon_bytes": anon,
        "file_referenced_bytes": file,
        # Per model: the file-backed pages under its tensors (private memory has no owner in /proc).
        "file_referenced_policy_bytes": reply["dpo_host_file_referenced_policy_bytes"],
        "file_referenced_reference_bytes": reply["dpo_host_file_referenced_reference_bytes"],
        "source": "after DPOTrainer.__init__: " + HOST_MEASUREMENT,
    }


def bill_columns(planned: dict, measured: dict, reply: dict) -> dict:
    """`dpo_bill`: planned, measured, the ratio of the totals and of the peaks (None where not measured)."""

    def ratio(key):
        value = measured[f"{key}_bytes"]
        return None if value is None else value / planned[f"{key}_bytes"]

    return {
        "planned": planned,
        "measured": measured,
        "measured_over_planned": ratio("total"),
        "peak_measured_over_planned": ratio("peak"),
        # What the trainer built, by tensor sizes: a layout check of the plan, never a measurement.
        "layout": {
            "policy_bytes": reply["dpo_tensor_policy_bytes"],
            "adapter_bytes": reply["dpo_tensor_adapter_bytes"],
            "reference_bytes": reply["dpo_tensor_reference_bytes"],
            "adapter_parameters": reply["dpo_adapter_parameters"],
            "models_held": reply["dpo_models_held"],
        },
    }


def test_dpo_bill(benchmark, dpo_case, fresh_process_server):
    spec, options = dpo_case.spec, dpo_case.options
    if spec.quantization != "none":
        pytest.importorskip("bitsandbytes", reason="requires bitsandbytes for 8-bit and 4-bit loading")
    if options.use_peft:
        pytest.importorskip("peft", reason="requires peft for DPO with --use_peft")
    pytest.importorskip("trl", reason="requires trl: the DPO bill is what its DPOTrainer holds")
    from transformers import AutoConfig

    folder = checkpoint_folder(dpo_case.checkpoint)
    config = AutoConfig.from_pretrained(folder)
    topology = Topology.detect()
    on_device = topology.accelerator == "cuda"
    planned = bill(plan_dpo_loads(spec, options, topology), config)
    warmup = warmup_checkpoint(config, predict(spec, config, checkpoint=folder), "cuda" if on_device else None)
    request = {
        "spec": dataclasses.asdict(spec), "options": dataclasses.asdict(options), "rows": ROWS, "warmup_path": warmup,
    }
    replies: list[dict] = []
    # One construction, in a fresh process: a second one would be a warm process's, and a real-size
    # quantized construction takes minutes on CPU.
    benchmark.pedantic(lambda: replies.append(fresh_process_server.measure_dpo(request)), rounds=1, warmup_rounds=0)
    reply = replies[-1]
    measured = measured_bill(reply, checkpoint_layout(folder)[0], on_device)
    benchmark.extra_info.update(
        {
            "case_id": dpo_case.id,
            "kind": "dpo",
            "dpo_setup": dpo_case.setup,
            "checkpoint": dpo_case.checkpoint.token,
            "checkpoint_kind": dpo_case.checkpoint.kind,
            "dtype": spec.dtype,
            "quantization": dpo_case.quantization,
            "device": "cuda" if on_device else "cpu",
            "options": dataclasses.asdict(options),
            "rounds": 1,
            "warmup_rounds": 0,
            "latency_s": [reply["dpo_init_s"]],
            "median_latency_s": reply["dpo_init_s"],
            "dpo_bill": bill_columns(planned, measured, reply),
            **{key: value for key, value in reply.items() if key.startswith("dpo_") and key != "dpo_init_s"},
        }
    )
