"""`report compare` cannot be fooled: each way a new run can lose its data, or make the comparison
meaningless, is planted into a copy of the recorded run (tests/data/bench-cpu-quick.json: 51 cases,
`pytest benchmarks --quick`) and must fail the gate, naming what was lost.

Exit 1: the new run lost data (a base case missing, a gated metric missing, no case in common) or
regressed. Exit 2: unusable input (a case key twice in a run, different quick/rounds settings, an
empty base, mixed latency sources). The expected lines are written out by hand from the recorded
file, not taken from the code's output.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from policyload.report import main

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "tests" / "data" / "bench-cpu-quick.json"
#: A full (not quick) run of the same 51 cases on the same machine: 5 rounds after 1 warm-up.
FULL_RUN = ROOT / "benchmarks" / "baselines" / "cpu" / "run-5.json.gz"
MISSING_HEADING = (
    "case(s) of the base missing from the new run (skipped, failed, renamed or removed; "
    "--accept-removed CASE_KEY if intended):"
)
LOST_METRIC_HEADING = "case(s) missing a gated metric that the base has:"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


def recorded() -> dict:
    return json.loads(RECORDED.read_text())


def case(document: dict, case_id: str) -> dict:
    (benchmark,) = [b for b in document["benchmarks"] if b["extra_info"]["case_id"] == case_id]
    return benchmark


def drop(document: dict, *case_ids: str) -> dict:
    document["benchmarks"] = [b for b in document["benchmarks"] if b["extra_info"]["case_id"] not in case_ids]
    return document


def compare(tmp_path: Path, base: dict | Path, new: dict | Path, *options) -> Result:
    """`python -m policyload.report compare BASE NEW ...` in this process, documents written to tmp_path first."""
    paths = []
    for name, document in (("base", base), ("new", new)):
        if isinstance(document, dict):
            path = tmp_path / f"{name}.json"
            path.write_text(json.dumps(document))
            document = path
        paths.append(document)
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        returncode = main(["compare", *map(str, paths), *map(str, options)])
    return Result(returncode, stdout.getvalue(), stderr.getvalue())


def section(result: Result, heading_end: str) -> list[str]:
    """The indented lines under the heading line of result's stdout that ends with `heading_end`."""
    lines = result.lines
    (start,) = [index for index, line in enumerate(lines) if line.endswith(heading_end)]
    body = []
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        body.append(line.strip())
    assert lines[start] == f"{len(body)} {heading_end}", lines[start]
    return body


# -- the identical run, and the issue's own command line


def test_identical_runs_pass_with_nothing_to_note(tmp_path):
    result = compare(tmp_path, RECORDED, RECORDED)

    assert (result.returncode, result.stdout, result.stderr) == (0, "no regression in 51 common case(s)\n", "")


def test_the_issue_command_line_fails_on_one_dropped_case(tmp_path):
    new = tmp_path / "new.json"
    new.write_text(json.dumps(drop(recorded(), "gpt2-bf16-8bit")))

    result = subprocess.run(
        [sys.executable, "-m", "policyload.report", "compare", str(RECORDED), str(new)], capture_output=True, text=True
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert "gpt2/bfloat16/8bit" in result.stdout
    assert "no regression" not in result.stdout


# -- exit 1: the new run lost data


def test_an_empty_new_run_fails_naming_every_case(tmp_path):
    new = recorded()
    new["benchmarks"] = []

    result = compare(tmp_path, RECORDED, new)

    assert result.returncode == 1
    missing = section(result, MISSING_HEADING)
    assert len(missing) == 51
    assert {"llama/auto/none", "qwen2/bfloat16/4bit-nf4-nested", "gpt2/float16/4bit-fp4"} <= set(missing)
    assert "no case in common: nothing was compared (51 in base, 0 in new)" in result.lines
    assert "no regression" not in result.stdout


def test_one_dropped_case_fails_naming_it(tmp_path):
    result = compare(tmp_path, RECORDED, drop(recorded(), "qwen2-fp16-8bit"))

    assert result.returncode == 1
    assert section(result, MISSING_HEADING) == ["qwen2/float16/8bit"]
    assert "no regression" not in result.stdout


def test_three_renamed_cases_fail_naming_the_base_names(tmp_path):
    new = recorded()
    for case_id in ("llama-fp16-none", "llama-fp16-8bit", "gpt2-auto-none"):
        case(new, case_id)["extra_info"]["checkpoint"] += "-renamed"

    result = compare(tmp_path, RECORDED, new)

    assert result.returncode == 1
    assert section(result, MISSING_HEADING) == ["gpt2/auto/none", "llama/float16/8bit", "llama/float16/none"]
    assert [line for line in result.lines if line.endswith(": only in new")] == [
        "note: gpt2-renamed/auto/none: only in new",
        "note: llama-renamed/float16/8bit: only in new",
        "note: llama-renamed/float16/none: only in new",
    ]


def test_every_memory_value_null_fails_naming_each_case_and_metric(tmp_path):
    new = recorded()
    for benchmark in new["benchmarks"]:
        benchmark["extra_info"]["peak_bytes"] = None
        benchmark["extra_info"]["resident_bytes"] = None

    result = compare(tmp_path, RECORDED, new)

    assert result.returncode == 1
    lost = section(result, LOST_METRIC_HEADING)
    assert len(lost) == 51
    assert "llama/bfloat16/8bit: peak memory, resident memory" in lost
    assert "gpt2/float32/none: peak memory, resident memory" in lost


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("peak_bytes", "absent", "qwen2/float32/4bit-fp4: peak memory"),
        ("resident_bytes", None, "qwen2/float32/4bit-fp4: resident memory"),
        ("peak_bytes", float("nan"), "qwen2/float32/4bit-fp4: peak memory"),
        ("resident_bytes", "n/a", "qwen2/float32/4bit-fp4: resident memory"),
        ("median_latency_s", "absent",
         "qwen2/float32/4bit-fp4: median latency (the new run has only pytest-benchmark's stats.median)"),
        ("median_latency_s", None,
         "qwen2/float32/4bit-fp4: median latency (the new run has only pytest-benchmark's stats.median)"),
    ],
    ids=["peak-absent", "resident-null", "peak-nan", "resident-string", "latency-absent", "latency-null"],
)
def test_a_gated_metric_missing_from_one_case_fails_naming_it(tmp_path, field, value, expected):
    new = recorded()
    extra = case(new, "qwen2-fp32-4bit-fp4")["extra_info"]
    if value == "absent":
        del extra[field]
    else:
        extra[field] = value

    result = compare(tmp_path, RECORDED, new)

    assert result.returncode == 1
    assert section(result, LOST_METRIC_HEADING) == [expected]


def test_no_case_in_common_fails_even_when_every_removal_is_accepted(tmp_path):
    new = recorded()
    new["benchmarks"] = []

    result = compare(tmp_path, RECORDED, new, "--accept-removed", "*")

    assert result.returncode == 1
    assert MISSING_HEADING not in result.stdout  # all 51 accepted ...
    assert "no case in common: nothing was compared (51 in base, 0 in new)" in result.lines  # ... and still refused


# -- --accept-removed: intended removals pass, with a note


def test_an_accepted_removal_passes_with_a_note(tmp_path):
    result = compare(tmp_path, RECORDED, drop(recorded(), "qwen2-fp16-8bit"), "--accept-removed", "qwen2/float16/8bit")

    assert (result.returncode, result.lines) == (0, [
        "note: qwen2/float16/8bit: only in base, removal accepted (--accept-removed 'qwen2/float16/8bit')",
        "no regression in 50 common case(s)",
    ])


def test_a_glob_accepts_every_case_it_matches_and_no_other(tmp_path):
    qwen2 = [b["extra_info"]["case_id"] for b in recorded()["benchmarks"] if b["extra_info"]["checkpoint"] == "qwen2"]
    assert len(qwen2) == 17

    accepted = compare(tmp_path, RECORDED, drop(recorded(), *qwen2), "--accept-removed", "qwen2/*")
    one_more = compare(tmp_path, RECORDED, drop(recorded(), *qwen2, "llama-auto-8bit"), "--accept-removed", "qwen2/*")

    assert accepted.returncode == 0, accepted.stdout
    assert accepted.lines[-1] == "no regression in 34 common case(s)"
    assert "note: qwen2/float32/4bit-nf4-nested: only in base, removal accepted (--accept-removed 'qwen2/*')" in (
        accepted.lines
    )
    assert len([line for line in accepted.lines if "removal accepted" in line]) == 17
    assert one_more.returncode == 1
    assert section(one_more, MISSING_HEADING) == ["llama/auto/8bit"]


def test_an_accepted_pattern_that_matches_nothing_is_noted(tmp_path):
    result = compare(tmp_path, RECORDED, RECORDED, "--accept-removed", "mistral/*")

    assert (result.returncode, result.lines) == (0, [
        "note: --accept-removed 'mistral/*' matches no case missing from the new run",
        "no regression in 51 common case(s)",
    ])


# -- exit 2: a comparison that would mean nothing


@pytest.mark.parametrize("side", ["base", "new"])
def test_a_case_key_twice_in_one_run_is_refused(tmp_path, side):
    doubled = recorded()
    doubled["benchmarks"].append(json.loads(json.dumps(case(doubled, "gpt2-fp16-none"))))
    runs = {"base": RECORDED, "new": RECORDED, side: doubled}

    result = compare(tmp_path, runs["base"], runs["new"])

    assert result.returncode == 2
    assert result.stderr == (
        f"error: {tmp_path / f'{side}.json'}: 1 case key(s) occur more than once: gpt2/float16/none "
        "(two benchmarks of one case: which would be compared?)\n"
    )


def test_a_case_with_different_rounds_is_refused(tmp_path):
    new = recorded()
    case(new, "llama-fp32-8bit")["extra_info"]["rounds"] = 5

    result = compare(tmp_path, RECORDED, new)

    assert result.returncode == 2
    assert result.stderr == (
        "error: refusing to compare cases measured with different rounds: base 1 round(s) after 0 warm-up, "
        "new 5 round(s) after 0 warm-up in 1 case(s): llama/float32/8bit\n"
    )


def test_a_case_with_different_warmup_rounds_is_refused(tmp_path):
    new = recorded()
    for case_id in ("gpt2-fp32-none", "qwen2-auto-none"):
        case(new, case_id)["extra_info"]["warmup_rounds"] = 1

    result = compare(tmp_path, RECORDED, new)

    assert result.returncode == 2
    assert result.stderr == (
        "error: refusing to compare cases measured with different rounds: base 1 round(s) after 0 warm-up, "
        "new 1 round(s) after 1 warm-up in 2 case(s): gpt2/float32/none, qwen2/auto/none\n"
    )


def test_a_quick_run_against_a_full_one_is_refused(tmp_path):
    new = recorded()
    new["machine_info"]["policyload"]["quick"] = False

    result = compare(tmp_path, RECORDED, new)

    assert result.returncode == 2
    assert result.stderr == (
        f"error: refusing to compare runs with different quick settings: {RECORDED} quick=True, "
        f"{tmp_path / 'new.json'} quick=False (--quick measures 1 round without warm-up)\n"
    )


def test_the_recorded_quick_run_against_a_recorded_full_run_is_refused(tmp_path):
    full = json.loads(gzip.decompress(FULL_RUN.read_bytes()))
    assert (full["machine_info"]["policyload"]["quick"], len(full["benchmarks"])) == (False, 51)

    result = compare(tmp_path, FULL_RUN, RECORDED)

    assert result.returncode == 2
    assert "refusing to compare runs with different quick settings" in result.stderr
    assert "quick=False" in result.stderr and "quick=True" in result.stderr


def test_an_empty_base_is_refused(tmp_path):
    base = recorded()
    base["benchmarks"] = []

    result = compare(tmp_path, base, RECORDED)

    assert result.returncode == 2
    assert result.stderr == f"error: {tmp_path / 'base.json'}: the base has no benchmarks: nothing to gate against\n"


# -- latency: the tracker's own measurement of the load, not pytest-benchmark's timing of load_once


def test_a_latency_regression_in_the_tracker_median_is_caught(tmp_path):
    new = recorded()
    case(new, "llama-bf16-4bit-nf4-nested")["extra_info"]["median_latency_s"] *= 1.5

    result = compare(tmp_path, RECORDED, new, "--max-latency-regression", "15%")

    assert result.returncode == 1
    (line,) = section(result, "regression(s):")
    # The recorded median_latency_s is 0.5333050049999883 s; 1.5 x that is 0.79995750... s.
    assert line == "llama/bfloat16/4bit-nf4-nested: median latency +50.0% (533.31 ms -> 799.96 ms; allowed +15.0%)"


def test_tracker_overhead_in_stats_median_alone_is_not_a_regression(tmp_path):
    """NVML init/shutdown and allocator syncs inside load_once: +300 ms on every case's stats.median."""
    new = recorded()
    for benchmark in new["benchmarks"]:
        benchmark["stats"]["median"] += 0.300

    result = compare(tmp_path, RECORDED, new, "--max-latency-regression", "15%")

    assert (result.returncode, result.lines) == (0, ["no regression in 51 common case(s)"])


def without_tracker_latency(document: dict) -> dict:
    for benchmark in document["benchmarks"]:
        del benchmark["extra_info"]["median_latency_s"]
    return document


def test_a_base_with_only_stats_median_against_a_tracker_latency_is_refused(tmp_path):
    result = compare(tmp_path, without_tracker_latency(recorded()), RECORDED)

    assert result.returncode == 2
    assert result.stderr.startswith(
        f"error: refusing to compare latencies measured differently: {tmp_path / 'base.json'} has only "
        "pytest-benchmark's stats.median"
    )
    assert "in 51 case(s): gpt2/auto/8bit, gpt2/auto/none," in result.stderr


def test_two_files_with_only_stats_median_are_compared_on_it_with_a_note(tmp_path):
    base = without_tracker_latency(recorded())
    slower = without_tracker_latency(recorded())
    case(slower, "gpt2-bf16-none")["stats"]["median"] *= 2

    same = compare(tmp_path, base, base)
    regressed = compare(tmp_path, base, slower)

    note = (
        "note: median latency of 51 case(s) is pytest-benchmark's stats.median in both runs (files without "
        "extra_info.median_latency_s): it includes the trackers' overhead"
    )
    assert (same.returncode, same.lines) == (0, [note, "no regression in 51 common case(s)"])
    assert regressed.returncode == 1
    # The recorded stats.median is 0.03317730100002336 s; twice that is 0.06635460... s.
    assert section(regressed, "regression(s):") == [
        "gpt2/bfloat16/none: median latency +100.0% (33.18 ms -> 66.35 ms; allowed +15.0%)"
    ]


def test_a_metric_the_base_lacks_is_noted_not_gated(tmp_path):
    base = recorded()
    case(base, "llama-auto-none")["extra_info"]["peak_bytes"] = None

    result = compare(tmp_path, base, RECORDED)

    assert (result.returncode, result.lines) == (0, [
        "note: peak memory: not in the base for 1 case(s), not gated there: llama/auto/none",
        "no regression in 51 common case(s)",
    ])


def test_the_committed_runs_record_the_tracker_latency_and_rounds_in_every_case():
    for path in [RECORDED, *sorted((ROOT / "benchmarks" / "baselines" / "cpu").glob("run-*.json.gz"))]:
        text = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_text()
        document = json.loads(text)
        for benchmark in document["benchmarks"]:
            extra = benchmark["extra_info"]
            assert isinstance(extra["median_latency_s"], float) and extra["median_latency_s"] > 0, path
            assert (type(extra["rounds"]), type(extra["warmup_rounds"])) == (int, int), path
        assert isinstance(document["machine_info"]["policyload"]["quick"], bool), path
