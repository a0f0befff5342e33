"""The first DPO training steps, measured per phase and per component, against the plan
(`policyload.plan.step.plan_training_step`), per case of `benchmarks/train_cases.py`.

Each case runs TRL's own DPOTrainer for two optimizer steps in a fresh process
(`policyload.measure.train_step`: where the phases are hooked, how the allocator is read; the
components are isolated in the first step, the peaks judged are the second's, a step that starts
with the optimizer's state as the plan's does). The
figures are never derived from the plan: the plan is computed here, apart, and the two are put side
by side in `extra_info["train_step"]`, with the peers' estimates (`policyload.estimators`) as percent
off the measured step peak. `python -m benchmarks.check_train_step JSON` holds the planner to it.

Memory is n/a on CPU for a checkpoint below `MEASURABLE_MIN_BYTES` (the tiny ones), with the
reason, as for the load and the DPO bill; the step still runs, its phases are still hooked (the
record says which marks were seen and the batch's shape), and its latency is recorded.
"""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.check_train_step import peer_columns, planned_step, step_columns
from benchmarks.test_load import MEASURABLE_MIN_BYTES, checkpoint_folder, not_measurable
from policyload.measure.train_step import PHASES, STEPS
from policyload.memory_model import checkpoint_layout


def test_train_step(benchmark, train_case, fresh_process_server):
    spec, options = train_case.spec, train_case.options
    if spec.quantization != "none":
        pytest.importorskip("bitsandbytes", reason="requires bitsandbytes for 4-bit loading")
    pytest.importorskip("peft", reason="requires peft for DPO with LoRA")
    pytest.importorskip("trl", reason="requires trl: the step is its DPOTrainer's")
    from transformers import AutoConfig

    from policyload import Topology

    folder = checkpoint_folder(train_case.checkpoint)
    config = AutoConfig.from_pretrained(folder)
    on_device = Topology.detect().accelerator == "cuda"
    device = "cuda" if on_device else "cpu"
    planned = planned_step(train_case, config, device)
    request = {
        "spec": dataclasses.asdict(spec), "options": dataclasses.asdict(options),
        "train": train_case.training_arguments,
    }
    replies: list[dict] = []
    timing: list[float] = []

    def one_step():
        import time

        start = time.perf_counter()
        replies.append(fresh_process_server.measure_train_step(request))
        timing.append(time.perf_counter() - start)

    # One fresh process per case, one round: a second round would be a warm process's.
    benchmark.pedantic(one_step, rounds=1, warmup_rounds=0)
    reply = replies[-1]
    steady_peak = reply["train_steps"][-1]["step_peak_bytes"]
    checkpoint_bytes = checkpoint_layout(folder)[0]
    measurable = on_device or checkpoint_bytes >= MEASURABLE_MIN_BYTES
    source = reply["train_source"] if measurable else not_measurable(checkpoint_bytes)
    benchmark.extra_info.update(
        {
            "case_id": train_case.id,
            "kind": "train",
            "train_setup": train_case.setup,
            "checkpoint": train_case.checkpoint.token,
            "checkpoint_kind": train_case.checkpoint.kind,
            "dtype": spec.dtype,
            "quantization": train_case.quantization,
            "attn_implementation": spec.attn_implementation,
            "training_arguments": train_case.training_arguments,
            "device": "cuda" if on_device else "cpu",
            "options": dataclasses.asdict(options),
            "rounds": 1,
            "warmup_rounds": 0,
            "latency_s": timing,
            "median_latency_s": timing[-1],
            "marks": [item["name"] for item in reply["train_marks"]],
            "batch_shape": reply["train_batch_shape"],
            "memory_source": source,
            "train_step": step_columns(planned, reply["train_steps"] if measurable else None),
            "peers": peer_columns(train_case, config, steady_peak if measurable else None, device),
            "host_peak_bytes": reply["train_host_peak_bytes"] if measurable and not on_device else None,
            # The child's whole reply: the readings at every mark, from which `train_step` was computed
            # (tests/test_train_step.py re-plans recorded runs against them).
            "reply": reply,
        }
    )
    # The steps ran as the case says: every phase hooked in each, the batch padded to max_length.
    phases = [phase for phase in PHASES if not (options.precompute_ref_log_probs and phase == "reference_forward")]
    # TRL 1.16 runs the policy forward first (dpo_trainer.py:1299, then 1327-1338).
    expected = [f"{step}/{phase}:{end}" for step in range(1, STEPS + 1) for phase in phases for end in ("begin", "end")]
    assert [item["name"] for item in reply["train_marks"]] == expected
    assert reply["train_batch_shape"] == [2 * train_case.batch_size, train_case.max_length]
