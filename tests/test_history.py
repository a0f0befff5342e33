"""`python -m policyload.report history`: runs in time order, each case across them with the gate's
allowance and each run's outcome, the gate's verdict on each run, one self-contained HTML file.
(What a browser draws of it: tests/browser/.)"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from policyload.report import ReportError, load_run
from policyload.report.history import allowance, cases_of, gate_verdicts, in_time_order

RECORDED = Path(__file__).parent / "data" / "bench-cpu-quick.json"
#: compare's allowances as benchmarks/thresholds.toml sets them today: 20%, 2%, 50 ms.
THRESHOLDS = {"max_latency_regression": 0.20, "max_memory_regression": 0.02, "latency_floor_s": 0.050}


@pytest.fixture
def recorded() -> dict:
    return json.loads(RECORDED.read_text())


def write(tmp_path: Path, name: str, document: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def night(document: dict, when: str, slower: float = 1.0) -> dict:
    """A copy of the recorded run, started at `when`, every latency times `slower`."""
    run = copy.deepcopy(document)
    run["datetime"] = when
    for benchmark in run["benchmarks"]:
        benchmark["extra_info"]["median_latency_s"] *= slower
    return run


def test_the_gate_lets_a_latency_through_up_to_the_larger_of_percent_and_floor():
    # 20 ms: +20% is 24 ms, +50 ms is 70 ms: the floor decides. 1 s: 1.2 s against 1.05 s.
    assert allowance(0.020, THRESHOLDS) == pytest.approx(0.070)
    assert allowance(1.0, THRESHOLDS) == pytest.approx(1.2)
    assert allowance(None, THRESHOLDS) is None


def test_runs_are_put_in_time_order_whatever_the_order_given(tmp_path, recorded):
    late = write(tmp_path, "late.json", night(recorded, "2026-12-02T01:00:00+00:00"))
    early = write(tmp_path, "early.json", night(recorded, "2026-12-01T01:00:00+00:00"))

    assert [run.path.name for run in in_time_order([load_run(late), load_run(early)])] == ["early.json", "late.json"]


def test_a_run_without_a_datetime_is_refused_naming_the_file(tmp_path, recorded):
    undated = copy.deepcopy(recorded)
    del undated["datetime"]
    path = write(tmp_path, "undated.json", undated)

    with pytest.raises(ReportError, match=r"undated\.json: no 'datetime'"):
        in_time_order([load_run(path)])


def test_a_case_that_skips_the_next_night_has_its_outcome_and_the_allowance_of_the_night_before(tmp_path, recorded):
    first = night(recorded, "2026-12-01T01:00:00+00:00")
    second = night(recorded, "2026-12-02T01:00:00+00:00")
    second["benchmarks"] = [b for b in second["benchmarks"] if b["extra_info"]["case_id"] != "qwen2-bf16-8bit"]
    second["policyload_outcomes"] = [{"case_id": "qwen2-bf16-8bit", "checkpoint": "qwen2", "dtype": "bfloat16",
                                      "quantization": "8bit", "outcome": "skipped", "reason": "planted"}]
    runs = [load_run(write(tmp_path, "1.json", first)), load_run(write(tmp_path, "2.json", second))]
    (before,) = [b["extra_info"]["median_latency_s"] for b in first["benchmarks"]
                 if b["extra_info"]["case_id"] == "qwen2-bf16-8bit"]

    (case,) = [case for case in cases_of(runs, THRESHOLDS) if case.key == "qwen2/bfloat16/8bit"]

    assert case.outcomes == ["measured", "skipped"] and case.reasons == ["", "planted"]
    assert case.latency_ms == [pytest.approx(before * 1000), None]
    assert case.allowance_ms == [None, pytest.approx(max(before * 1.2, before + 0.050) * 1000)]
    assert case.memory == {} and "n/a" in case.memory_note


def test_the_gate_verdicts_say_what_regressed_and_what_cannot_be_compared(tmp_path, recorded):
    nights = [night(recorded, f"2026-12-0{day}T01:00:00+00:00", slower) for day, slower in ((1, 1.0), (2, 3.0))]
    other = night(recorded, "2026-12-03T01:00:00+00:00")
    other["machine_info"]["policyload"]["device"] = "NVIDIA H200"
    runs = [load_run(write(tmp_path, f"{index}.json", run)) for index, run in enumerate(nights)]

    (verdict,) = gate_verdicts(runs, THRESHOLDS)
    (refused,) = gate_verdicts([runs[0], load_run(write(tmp_path, "other.json", other))], THRESHOLDS)

    assert verdict["exit"] == 1 and verdict["common"] == 51
    # Three times slower is +200%, beyond 20% everywhere; but a case must also grow by more than the
    # 50 ms floor: old * 3 - old > 50 ms, so only cases over 25 ms regress (a 15 ms load: +30 ms).
    slow = sum(1 for b in recorded["benchmarks"] if b["extra_info"]["median_latency_s"] * 2 > 0.050)
    assert len([line for line in verdict["lines"] if line.startswith("regression: ")]) == slow
    assert refused["exit"] == 2 and "different devices" in refused["lines"][0]


def test_the_page_is_one_file_with_plotly_inlined_and_the_verdicts_written_out(tmp_path, recorded):
    paths = [write(tmp_path, f"{day}.json", night(recorded, f"2026-12-0{day}T01:00:00+00:00", slower))
             for day, slower in ((2, 3.0), (1, 1.0))]
    target = tmp_path / "made" / "history.html"

    result = subprocess.run(
        [sys.executable, "-m", "policyload.report", "history", *map(str, paths), "--html", str(target)],
        capture_output=True, text=True,
    )
    text = target.read_text()

    assert result.returncode == 0, result.stderr
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(?!data:)", text), "nothing is fetched to view the page"
    assert "Plotly.newPlot" in text and "plotly.js v" in text.lower()
    # 1.json ran first: the verdict is 2.json (three times slower) against it, and it fails.
    assert "fails (exit 1)" in text and text.index("<code>1.json</code>") < text.index("<code>2.json</code>")
    assert text.count('class="chart latency"') == 51 and 'class="chart memory"' not in text


def test_history_without_html_is_a_usage_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "policyload.report", "history", str(RECORDED)],
                            capture_output=True, text=True)

    assert result.returncode == 2 and "--html" in result.stderr


def test_page_refuses_runs_without_a_datetime_before_writing(tmp_path, recorded):
    undated = copy.deepcopy(recorded)
    del undated["datetime"]
    target = tmp_path / "history.html"

    result = subprocess.run(
        [sys.executable, "-m", "policyload.report", "history", str(write(tmp_path, "u.json", undated)),
         "--html", str(target)], capture_output=True, text=True,
    )

    assert result.returncode == 2 and "no 'datetime'" in result.stderr
    assert not target.exists()
