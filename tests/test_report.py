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
