"""`python -m policyload.report` on a recorded run (tests/data/bench-cpu-quick.json: `pytest benchmarks
--quick` on a 2-core x86_64 CPU, torch 2.13.0+cpu, transformers 5.24.0, bitsandbytes 0.50.2)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from policyload.report import main, parse_percent

RECORDED = Path(__file__).parent / "data" / "bench-cpu-quick.json"


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "policyload.report", *map(str, args)], capture_output=True, text=True)


def write(tmp_path: Path, name: str, document: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def recorded() -> dict:
    return json.loads(RECORDED.read_text())


def test_table_has_one_row_per_case_and_writes_markdown_and_chart(tmp_path, recorded):
    markdown, chart = tmp_path / "bench.md", tmp_path / "bench.png"

    result = run_cli(RECORDED, "--markdown", markdown, "--chart", chart)

    assert result.returncode == 0, result.stderr
    rows = [line for line in markdown.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]
    cases = {
        (b["extra_info"]["checkpoint"], b["extra_info"]["dtype"], b["extra_info"]["quantization"])
        for b in recorded["benchmarks"]
    }
    assert {tuple(cell.strip() for cell in row.split("|")[1:4]) for row in rows} == cases
    assert len(rows) == len(cases)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chart_defaults_to_beside_the_json(tmp_path):
    copy_path = tmp_path / "run.json"
    copy_path.write_text(RECORDED.read_text())

    assert main([str(copy_path)]) == 0
    assert (tmp_path / "run.png").exists()


def test_compare_identical_runs_passes():
    result = run_cli("compare", RECORDED, RECORDED, "--max-latency-regression", "15%", "--max-memory-regression", "2%")

    assert (result.returncode, result.stdout.splitlines()[-1]) == (0, "no regression in 51 common case(s)")


def test_compare_fails_on_planted_regressions_and_names_them(tmp_path, recorded):
    new = copy.deepcopy(recorded)
    by_id = {b["extra_info"]["case_id"]: b for b in new["benchmarks"]}
    by_id["llama-bf16-4bit-nf4-nested"]["extra_info"]["median_latency_s"] *= 1.5
    peak = by_id["gpt2-fp32-8bit"]["extra_info"]["peak_bytes"]
    by_id["gpt2-fp32-8bit"]["extra_info"]["peak_bytes"] = int(peak * 1.05)
    new_path = write(tmp_path, "new.json", new)

    result = run_cli("compare", RECORDED, new_path, "--max-latency-regression", "15%", "--max-memory-regression", "2%")

    assert result.returncode == 1
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert lines[0] == "2 regression(s):"
    assert lines[1].startswith("gpt2/float32/8bit: peak memory +5.0% (")
    assert lines[2].startswith("llama/bfloat16/4bit-nf4-nested: median latency +50.0% (")


def test_compare_refuses_different_devices_unless_allowed(tmp_path, recorded):
    other = copy.deepcopy(recorded)
    other["machine_info"]["policyload"]["device"] = "NVIDIA H200"
    other_path = write(tmp_path, "other.json", other)

    refused = run_cli("compare", RECORDED, other_path)
    allowed = run_cli("compare", RECORDED, other_path, "--allow-different-devices")

    assert (refused.returncode, allowed.returncode) == (2, 0)
    assert "refusing to compare runs from different devices" in refused.stderr
    assert "'NVIDIA H200'" in refused.stderr


@pytest.mark.parametrize("command", [["report"], ["compare-new"]])
def test_truncated_json_is_one_line_error_exit_2(tmp_path, command):
    truncated = tmp_path / "truncated.json"
    truncated.write_text(RECORDED.read_text()[:5000])
    args = [truncated] if command == ["report"] else ["compare", RECORDED, truncated]

    result = run_cli(*args)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {truncated}: not valid JSON (truncated or malformed)")


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"machine_info": {}}', "not a pytest-benchmark JSON file (no 'benchmarks' list)"),
        ('{"benchmarks": [{"name": "x"}]}',
         "benchmark #0 has no usable latency: neither extra_info.median_latency_s nor a usable stats.median"),
        ("", "not valid JSON"),
    ],
)
def test_malformed_json_is_one_line_error_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)

    assert main([str(path)]) == 2
    assert message in capsys.readouterr().err


def test_missing_file_is_one_line_error_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "absent.json")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'absent.json'}: cannot read")


@pytest.mark.parametrize("text, value", [("15%", 0.15), ("2", 0.02), ("0%", 0.0)])
def test_parse_percent(text, value):
    assert parse_percent(text) == pytest.approx(value)


# -- the main job's table and chart show what the tiny run measures (latency), memory n/a said once


def not_measurable_run(tmp_path: Path, recorded: dict) -> Path:
    """The recorded tiny run as `tox -e bench` writes it today: every host figure n/a, with the source
    benchmarks/test_load.py's `not_measurable` gives (checkpoint sizes 200 + i KiB, threshold 64 MiB)."""
    document = copy.deepcopy(recorded)
    for index, benchmark in enumerate(document["benchmarks"]):
        benchmark["extra_info"]["memory_measured_source"] = (
            f"n/a: checkpoint below measurable size ({200 + index} KiB; host figures are read from 64 MiB up)"
        )
        benchmark["extra_info"]["memory_measured_bytes"] = None
    return write(tmp_path, "tiny.json", document)


def test_tiny_run_table_is_latency_per_case_and_says_memory_na_once(tmp_path, recorded):
    from policyload.report import load_run, markdown_table

    table = markdown_table(load_run(not_measurable_run(tmp_path, recorded)))
    lines = table.splitlines()
    cases = len(recorded["benchmarks"])

    assert "| checkpoint | dtype | quantization | outcome | median latency |" in lines
    assert "RSS" not in table and "measured resident" not in table
    rows = [line for line in lines if line.startswith("| ") and line.count("|") == 6 and "---" not in line][1:]
    assert len(rows) == cases
    (memory,) = [line for line in lines if "n/a" in line]
    # The sizes were 200 .. 200 + cases - 1 KiB; the threshold is stated once, and where memory is measured.
    assert f"checkpoints of 200-{200 + cases - 1} KiB" in memory and "64 MiB up" in memory
    assert "docs/memory.md" in memory and "tox -e bench-realsize-cpu" in memory


def test_a_run_with_measured_memory_keeps_the_memory_columns(tmp_path, recorded):
    from policyload.report import load_run, markdown_table

    document = copy.deepcopy(recorded)
    document["benchmarks"][0]["extra_info"].update(memory_measured_source="host /proc", memory_measured_bytes=1 << 30)

    table = markdown_table(load_run(write(tmp_path, "measured.json", document)))

    assert "| measured resident |" in table and "Memory: n/a" not in table


def test_tiny_run_chart_is_latency_per_case_with_no_memory_axis(tmp_path, recorded):
    from policyload.report import load_run
    from policyload.report.tables import chart_figure

    figure = chart_figure(load_run(not_measurable_run(tmp_path, recorded)))
    (axes,) = figure.axes
    widths = sorted(round(bar.get_width(), 6) for bar in axes.patches)
    # The tracker's medians read off the JSON, in ms: one bar per case, nothing else drawn as a bar.
    expected = sorted(round(b["extra_info"]["median_latency_s"] * 1000, 6) for b in recorded["benchmarks"])

    assert (axes.get_xlabel(), widths) == ("median load latency (ms)", expected)
    assert any(text.get_text().startswith("Memory: n/a in all") for text in figure.texts)


def test_measured_chart_plots_the_measured_peak_only(tmp_path, recorded):
    from policyload.report import load_run
    from policyload.report.tables import chart_figure

    document = copy.deepcopy(recorded)
    document["benchmarks"][0]["extra_info"].update(
        memory_measured_source="host /proc", memory_measured_bytes=1 << 30, memory_peak_measured_bytes=2000 * 1024**2,
    )

    figure = chart_figure(load_run(write(tmp_path, "measured.json", document)))
    axes = figure.axes[0]
    points = [tuple(offset) for collection in axes.collections for offset in collection.get_offsets()]

    assert axes.get_xlabel() == "measured peak memory of the load (MiB)"
    # One case measured: one mark at 2000 MiB (the other cases' RSS growth is not drawn).
    assert [round(x) for x, _ in points] == [2000]
