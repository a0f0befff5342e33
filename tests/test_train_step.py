"""The training-step measurement: the replay of the allocator's record against the phase marks, the
components the boundaries isolate, the preference rows that pad to max_length, `check_train_step`
and the report's table (by hand-built readings), and the planner held to the real-size step recorded
in benchmarks/results/ (a real run on the 2-core machine)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import check_train_step
from policyload.measure.train_step import (
    PhaseMarks,
    isolated_components,
    marks_of_step,
    phase_readings,
    preference_rows,
)
from policyload.report import load_run, markdown_table

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "benchmarks" / "results" / "cpu-x86_64-2core" / "qwen2-0.5b-train-cpu.json.gz"
MIB = 1024**2
#: The training cases of the Qwen2-0.5B shape (benchmarks/train_cases.py), all recorded.
RECORDED_CASES = 10

#: Readings at the marks of a full fine-tune's step, by hand (MiB): weights 100 at the start, the
#: policy forward keeps 10 of activations (peak 30), the reference forward a 20 transient, backward
#: frees the activations and leaves 40 of gradients (peak 160) and 1 of graph freed before the
#: optimizer step, AdamW adds 80.
MARKS = [
    {"name": "policy_forward:begin", "live": 100 * MIB, "peak_since_previous": 100 * MIB},
    {"name": "policy_forward:end", "live": 110 * MIB, "peak_since_previous": 130 * MIB},
    {"name": "reference_forward:begin", "live": 110 * MIB, "peak_since_previous": 110 * MIB},
    {"name": "reference_forward:end", "live": 111 * MIB, "peak_since_previous": 130 * MIB},
    {"name": "backward:begin", "live": 112 * MIB, "peak_since_previous": 115 * MIB},
    {"name": "backward:end", "live": 141 * MIB, "peak_since_previous": 160 * MIB},
    {"name": "optimizer_step:begin", "live": 140 * MIB, "peak_since_previous": 140 * MIB},
    {"name": "optimizer_step:end", "live": 220 * MIB, "peak_since_previous": 220 * MIB},
]


def test_phase_readings_and_components_by_hand():
    readings = phase_readings(MARKS, offset=5 * MIB)
    assert readings["phases"]["policy_forward"] == {
        "live_before_bytes": 105 * MIB, "live_after_bytes": 115 * MIB, "peak_bytes": 135 * MIB,
    }
    assert readings["phases"]["backward"]["peak_bytes"] == 165 * MIB
    # The optimizer step's end is the step's highest reading: 220 + 5.
    assert readings["step_peak_bytes"] == 225 * MIB
    assert isolated_components(readings["phases"]) == {
        "step_start": 105 * MIB,
        "activations": 10 * MIB,
        "reference_forward": 130 * MIB - 110 * MIB,
        "gradients": 140 * MIB - 100 * MIB,  # at the optimizer step's begin, the graph's 1 MiB freed
        "optimizer_state": 80 * MIB,
    }


def test_marks_of_one_step_of_two():
    marks = [
        {"name": "1/backward:end", "live": 1, "peak_since_previous": 1},
        {"name": "2/backward:end", "live": 2, "peak_since_previous": 2},
        {"name": "12/backward:end", "live": 12, "peak_since_previous": 12},
    ]
    assert marks_of_step(marks, 1) == [{"name": "backward:end", "live": 1, "peak_since_previous": 1}]
    assert marks_of_step(marks, 2) == [{"name": "backward:end", "live": 2, "peak_since_previous": 2}]


def test_a_precomputed_step_has_no_reference_phase():
    marks = [m for m in MARKS if not m["name"].startswith("reference_forward")]
    readings = phase_readings(marks)
    assert sorted(readings["phases"]) == ["backward", "optimizer_step", "policy_forward"]
    assert "reference_forward" not in isolated_components(readings["phases"])


class _Event:
    def __init__(self, name, start_ns, nbytes=0):
        from torch.autograd import DeviceType

        self._name, self._start, self._nbytes, self._device = name, start_ns, nbytes, DeviceType.CPU

    def name(self):
        return self._name

    def start_ns(self):
        return self._start

    def nbytes(self):
        return self._nbytes

    def device_type(self):
        return self._device


def _profile(events):
    return SimpleNamespace(profiler=SimpleNamespace(kineto_results=SimpleNamespace(events=lambda: events)))


def test_cpu_replay_of_the_allocator_record_leaves_the_checkpoint_mapping_out():
    marks = PhaseMarks(cuda=False)
    marks.names = ["policy_forward:begin", "policy_forward:end"]
    events = [
        _Event("[memory]", 1, 1000),  # the checkpoint's mapping: a weight file's size
        _Event("[memory]", 2, 300),  # a tensor of the load
        _Event("policyload:policy_forward:begin", 3),
        _Event("[memory]", 4, 50),
        _Event("[memory]", 5, 70),  # peak 300 + 50 + 70
        _Event("[memory]", 6, -70),
        _Event("aten::mm", 6),  # not a memory event, not a mark
        _Event("policyload:policy_forward:end", 7),
    ]
    assert marks.readout_cpu(_profile(events), mapping_sizes={1000}) == [
        {"name": "policy_forward:begin", "live": 300, "peak_since_previous": 300},
        {"name": "policy_forward:end", "live": 350, "peak_since_previous": 420},
    ]


def test_cpu_replay_refuses_a_trace_without_the_marks_it_was_given():
    marks = PhaseMarks(cuda=False)
    marks.names = ["policy_forward:begin"]
    with pytest.raises(RuntimeError, match="expected \\['policy_forward:begin'\\]"):
        marks.readout_cpu(_profile([_Event("[memory]", 1, 10)]))


@pytest.mark.parametrize(("batch_size", "max_length"), [(1, 16), (2, 128)])
def test_preference_rows_are_longer_than_max_length_so_the_collator_truncates_to_it(batch_size, max_length):
    from policyload.plan.trainer import word_tokenizer

    rows = preference_rows(batch_size, max_length)
    tokenizer = word_tokenizer(rows)
    assert len(rows) == batch_size
    for row in rows:
        prompt = len(tokenizer(row["prompt"])["input_ids"])
        assert prompt == 8  # PROMPT_WORDS, one token a word
        for completion in ("chosen", "rejected"):
            # max_length words of completion: prompt + completion is past max_length by the prompt.
            assert prompt + len(tokenizer(row[completion])["input_ids"]) == max_length + 8


# --- check_train_step and the report, on readings written by hand ---------------------------------


def _case(case_id="train-reference-x-bf16-sdpa-gc-b1x128", planned_peak=230 * MIB, measured=True):
    from benchmarks.check_train_step import step_columns

    # Two steps read alike (the hand-written MARKS), as the child's `train_steps`.
    steps = [phase_readings(MARKS), phase_readings(MARKS)]

    planned = {
        "components": {
            "policy": 50 * MIB, "reference": 50 * MIB, "adapter": 0, "activations": 10 * MIB,
            "reference_forward": 20 * MIB, "gradients": 40 * MIB, "optimizer_state": 80 * MIB, "logits": 3 * MIB,
        },
        "phases": {"policy_forward": 135 * MIB, "reference_forward": 130 * MIB, "backward": 160 * MIB,
                   "optimizer_step": 220 * MIB},
        "peak_bytes": planned_peak,
    }
    return {
        "name": case_id,
        "stats": {"median": 1.0},
        "extra_info": {
            "case_id": case_id, "kind": "train", "train_setup": "reference", "checkpoint": "x",
            "checkpoint_kind": "realsize", "dtype": "bfloat16", "quantization": "none",
            "attn_implementation": "sdpa", "device": "cpu", "median_latency_s": 12.0,
            "training_arguments": {"per_device_train_batch_size": 1, "max_length": 128, "gradient_checkpointing": True},
            "marks": [f"{step}/{m['name']}" for step in (1, 2) for m in MARKS],
            "memory_source": "allocator" if measured else "n/a: tiny",
            "train_step": step_columns(planned, steps if measured else None),
            "peers": {"accelerate": {"estimate_bytes": 110 * MIB, "off": 0.5}},
        },
    }


def _write(tmp_path, *cases, outcomes=()) -> Path:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"benchmarks": list(cases), "policyload_train_outcomes": list(outcomes)}))
    return path


def test_columns_by_hand():
    step = _case()["extra_info"]["train_step"]
    # Weights: policy 50 + reference 50 + adapter 0 planned, 100 measured at the step's start.
    assert step["components"]["step_start"]["planned_bytes"] == 100 * MIB
    assert step["components"]["step_start"]["off"] == 0
    assert step["components"]["logits"]["measured_bytes"] is None
    assert step["peak"] == {"planned_bytes": 230 * MIB, "measured_bytes": 220 * MIB, "off": 230 / 220 - 1}


def test_check_passes_within_tolerance_and_fails_beyond(tmp_path, capsys):
    assert check_train_step.main([str(_write(tmp_path, _case()))]) == 0  # 230 / 220: +4.5%
    assert check_train_step.main([str(_write(tmp_path, _case(planned_peak=240 * MIB)))]) == 1  # +9.1%
    assert "planned step peak off by +9.1% (tolerance 5%)" in capsys.readouterr().out


def test_check_fails_on_a_component_beyond_10_percent(tmp_path, capsys):
    case = _case()
    component = case["extra_info"]["train_step"]["components"]["gradients"]
    component["planned_bytes"], component["off"] = 20 * MIB, -0.5  # a planner that halved the gradients
    assert check_train_step.main([str(_write(tmp_path, case))]) == 1
    assert "gradients planned 20.0 MiB, measured 40.0 MiB (-50.0%" in capsys.readouterr().out


def test_check_fails_on_a_step_whose_phases_were_not_hooked(tmp_path, capsys):
    case = _case()
    case["extra_info"]["marks"] = ["1/policy_forward:begin", "1/policy_forward:end"]  # the backward not reached
    assert check_train_step.main([str(_write(tmp_path, case))]) == 1
    assert "not one hooked optimizer step" in capsys.readouterr().out


def test_check_refuses_a_run_with_nothing_measured_and_fails_on_a_failed_case(tmp_path):
    assert check_train_step.main([str(_write(tmp_path, _case(measured=False)))]) == 2
    oom = {"case_id": "train-lora-x", "checkpoint": "x", "dtype": "bfloat16", "quantization": "none",
           "outcome": "oom", "reason": "child died (signal 9, status 9); out of memory?"}
    assert check_train_step.main([str(_write(tmp_path, _case(), outcomes=[oom]))]) == 1


def test_report_shows_the_training_step_table_and_gpu_not_yet_measured(tmp_path):
    skipped = {"case_id": "train-lora-y", "checkpoint": "y", "dtype": "bfloat16", "quantization": "none",
               "train_setup": "lora", "outcome": "failed", "reason": "RuntimeError: boom"}
    table = markdown_table(load_run(_write(tmp_path, _case(), outcomes=[skipped])))
    assert (
        "| train-reference-x-bf16-sdpa-gc-b1x128 | reference | bfloat16 | sdpa | on | 1x128 | 12.0 s "
        "| 220.0 MiB | 230.0 MiB | +4.5% | +50.0% |"
    ) in table
    assert "| train-lora-y | lora | bfloat16 | failed: RuntimeError: boom |" in table
    assert "not yet measured" in table
    assert "| train-reference-x-bf16-sdpa-gc-b1x128 | 100.0 MiB / 100.0 MiB (+0.0%) |" in table



def test_a_run_with_no_measured_memory_shows_latency_and_the_plan_and_says_n_a_once(tmp_path):
    tiny = _case("train-lora-t-bf16-sdpa-gc-b1x128", measured=False)
    tiny["extra_info"]["memory_source"] = (
        "n/a: checkpoint below measurable size (211 KiB; host figures are read from 64 MiB up)"
    )
    table = markdown_table(load_run(_write(tmp_path, tiny)))

    row = "| train-lora-t-bf16-sdpa-gc-b1x128 | reference | bfloat16 | sdpa | on | 1x128 | 12.0 s | 230.0 MiB |"
    assert row in table
    assert "measured peak" not in table and "accelerate off" not in table  # no column of n/a per case
    assert "Training-step memory: n/a in all 1 cases: checkpoints of 211 KiB" in table

# --- the planner of today against the recorded measurement -----------------------------------------


#: (case, what) the planner of today and the recorded steps disagree on beyond the tolerances, by
#: hand from the recorded run (docs/training-step-measured.md, "Disagreements"): strict both ways,
#: so a planner change that fixes one, or breaks another, shows here.
KNOWN_DISAGREEMENTS: set = set()
# Fixed: LoRA without checkpointing (bf16; SDPA 1x128, eager 1x128 and 2x256), activations planned
# +11-17% over the measured: the plan held an fp32 dropout noise tensor per LoRA input (2 x 4 x 896 B
# per token per layer) that DPOTrainer's p=0 dropout never makes (plan/step.py
# `lora_saved_bytes_per_token`).


def _disagreements(problems: list[str]) -> set:
    """{(case, component or "peak")} of check_train_step's problem lines."""
    found = set()
    for problem in problems:
        case, _, rest = problem.partition(": ")
        found.add((case, "peak" if rest.startswith("planned step peak") else rest.split(" ")[0]))
    return found


def test_planner_is_within_tolerance_of_every_recorded_real_size_step():
    """The recorded steps were read from the allocator; the plan is recomputed now from the config
    alone (`check_train_step.replan`), so a planner change that breaks the 5% peak or a 10%
    component shows here without a real-size run (the planted faults of tox -e mutation too):
    every step peak within 5%, every isolated component within 10% but the known disagreements."""
    run = load_run(RECORDED)
    check_train_step.replan(run)
    lines, problems, checked = check_train_step.judge(run, 0.05, 0.10)
    assert _disagreements(problems) == KNOWN_DISAGREEMENTS
    assert checked == len(run.train) == RECORDED_CASES


def test_recorded_run_shows_the_training_tables_and_the_check_passes(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(json.loads(gzip.decompress(RECORDED.read_bytes()))))
    assert check_train_step.main([str(path), "--replan"]) == 0
    out = capsys.readouterr().out
    # measured 273,920,844 B (the recorded reading) = 261.2 MiB; planned 319,389,168 B before the fix, less
    # 24 layers x 256 tokens x 2 x 4 x 896 B of fp32 dropout noise = 275,348,976 B = 262.6 MiB
    assert "train-lora-qwen2-0.5b-bf16-sdpa-nogc-b1x128: step peak planned" in out
    assert "  activations: planned 262.6 MiB vs measured 261.2 MiB (+0.5%)" in out
    table = markdown_table(load_run(path))
    assert "Training step by component" in table and "| train-lora-qwen2-0.5b-bf16-sdpa-gc-b1x128 | lora |" in table
