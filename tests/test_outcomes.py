"""Every case is a row: failed, out-of-memory and skipped cases reach the JSON and the table; and
`benchmarks.check_memory` holds measured memory to the model."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import check_memory
from benchmarks.outcomes import error_outcome
from policyload.report import load_run, markdown_table

RECORDED = Path(__file__).parent / "data" / "bench-cpu-quick.json"


def excinfo(error):
    return SimpleNamespace(value=error)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (MemoryError(), {"outcome": "oom", "error_type": "MemoryError", "reason": ""}),
        (
            RuntimeError("fresh-process load failed: child died (signal 9, status 9); out of memory?"),
            {"outcome": "oom", "error_type": "RuntimeError",
             "reason": "fresh-process load failed: child died (signal 9, status 9); out of memory?"},
        ),
        (
            ValueError("bad dtype\nsecond line"),
            {"outcome": "failed", "error_type": "ValueError", "reason": "bad dtype"},
        ),
    ],
)
def test_error_outcome_names_oom_and_keeps_the_first_line(error, expected):
    assert error_outcome(excinfo(error)) == expected


def with_outcomes(tmp_path, outcomes, memory=None) -> Path:
    document = json.loads(RECORDED.read_text())
    document["policyload_outcomes"] = outcomes
    if memory:
        document["benchmarks"] = document["benchmarks"][:1]
        document["benchmarks"][0]["extra_info"].update(memory)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(document))
    return path


def test_failed_oom_and_skipped_cases_are_rows_of_the_table(tmp_path):
    outcomes = [
        {"case_id": "big-fp32-none", "checkpoint": "big", "dtype": "float32", "quantization": "none",
         "outcome": "oom", "error_type": "RuntimeError", "reason": "child died (signal 9, status 9); out of memory?"},
        {"case_id": "big-bf16-8bit", "checkpoint": "big", "dtype": "bfloat16", "quantization": "8bit",
         "outcome": "failed", "error_type": "ValueError", "reason": "bad"},
        {"case_id": "big-bf16-none", "checkpoint": "big", "dtype": "bfloat16", "quantization": "none",
         "outcome": "skipped", "reason": "does not fit: needs 9.0 GiB of available host memory (memory model)"},
        {"case_id": "x", "checkpoint": "x", "dtype": "auto", "quantization": "none",
         "outcome": "skipped", "reason": "real-size case: run with --realsize"},
    ]

    table = markdown_table(load_run(with_outcomes(tmp_path, outcomes)))

    assert "| big | float32 | none | oom: RuntimeError: child died (signal 9, status 9); out of memory? |" in table
    assert "| big | bfloat16 | 8bit | failed: ValueError: bad |" in table
    assert "| big | bfloat16 | none | skipped: does not fit: needs 9.0 GiB" in table
    assert "| x |" not in table and "(1 skipped: real-size case: run with --realsize)" in table


MIB = 1024**2
MEASURED = {
    "memory_measured_source": "host /proc", "memory_measured_bytes": 1030 * MIB, "memory_predicted_bytes": 1000 * MIB,
    "memory_peak_measured_bytes": 2000 * MIB, "memory_peak_predicted_bytes": 1900 * MIB,
    "memory_estimates": {"get_memory_footprint": 900 * MIB, "policyload": 1000 * MIB},
}


def test_check_memory_passes_within_tolerance_and_the_estimator_table_shows_percent_off(tmp_path, capsys):
    path = with_outcomes(tmp_path, [], MEASURED)

    assert check_memory.main([str(path)]) == 0
    assert "(+3.0%)" in capsys.readouterr().out
    table = markdown_table(load_run(path))
    assert "| 1.0 GiB | 900.0 MiB (-12.6%) | 1000.0 MiB (-2.9%) |" in table


def test_check_memory_fails_beyond_tolerance_and_on_a_failed_case(tmp_path, capsys):
    assert check_memory.main([str(with_outcomes(tmp_path, [], MEASURED)), "--resident", "2%"]) == 1
    failed = [{"case_id": "c", "outcome": "oom", "reason": "killed"}]
    assert check_memory.main([str(with_outcomes(tmp_path, failed, MEASURED))]) == 1
    assert "problem: c: oom: killed" in capsys.readouterr().out


def test_check_memory_refuses_a_run_where_nothing_was_measured(tmp_path):
    assert check_memory.main([str(with_outcomes(tmp_path, []))]) == 2


def test_the_benchmark_json_records_every_case_outcome(tmp_path):
    import subprocess
    import sys

    output = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(Path(__file__).parents[1] / "benchmarks"), "-q", "-p", "no:cacheprovider",
         "--quick", "-k", "gpt2-bf16-none or qwen2-0.5b-bf16-none", "--benchmark-json", str(output)],
        capture_output=True, text=True,
    )

    assert result.returncode == 0, result.stdout[-2000:]
    document = json.loads(output.read_text())
    outcomes = {o["case_id"]: o for o in document["policyload_outcomes"]}
    assert outcomes["gpt2-bf16-none"]["outcome"] == "measured"
    assert outcomes["qwen2-0.5b-bf16-none"] == {
        "case_id": "qwen2-0.5b-bf16-none", "checkpoint": "qwen2-0.5b", "checkpoint_kind": "realsize",
        "dtype": "bfloat16", "quantization": "none", "outcome": "skipped",
        "reason": "real-size case: run with --realsize",
    }
    assert [b["name"] for b in document["benchmarks"]] == ["test_load[gpt2-bf16-none]"]
