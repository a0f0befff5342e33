"""`report compare --thresholds benchmarks/thresholds.toml`: the gate of the nightly GPU job.

Planted regressions just over and just under each threshold of the repository's own file, so a
change to a threshold keeps these tests true; flags override the file, the file the defaults.
"""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from policyload.report import DEFAULT_THRESHOLDS, load_thresholds, main

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = ROOT / "benchmarks" / "thresholds.toml"
RECORDED = ROOT / "tests" / "data" / "bench-cpu-quick.json"
#: threshold key -> (what compare calls it, how to plant a growth of `factor` in one case).
PLANTERS = {
    # The gated latency is the tracker's median of the load (extra_info), not pytest-benchmark's stats.median.
    "max_latency_regression": ("median latency", lambda benchmark, factor: benchmark["extra_info"].__setitem__(
        "median_latency_s", benchmark["extra_info"]["median_latency_s"] * factor)),
    "max_memory_regression": ("peak memory", lambda benchmark, factor: benchmark["extra_info"].__setitem__(
        "peak_bytes", round(benchmark["extra_info"]["peak_bytes"] * factor))),
}
CASE = "llama-bf16-4bit-nf4-nested"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def compare(base: Path, new: Path, *options) -> Result:
    """`python -m policyload.report compare ...`, in this process (a fresh one imports torch: seconds)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        returncode = main(["compare", str(base), str(new), *map(str, options)])
    return Result(returncode, stdout.getvalue(), stderr.getvalue())


def planted(tmp_path: Path, key: str, factor: float, base_median_s: float = 1.0) -> tuple[Path, Path]:
    """(base, new): the recorded run, with one case's `key` metric grown by `factor` in new.

    The case's median latency (extra_info.median_latency_s, the one compare gates) is set to
    `base_median_s` in both, so that the relative allowance, not the latency floor, decides (a
    real-size load lasts seconds).
    """
    paths = []
    for name, grow in (("base", 1.0), ("new", factor)):
        document = json.loads(RECORDED.read_text())
        (benchmark,) = [b for b in document["benchmarks"] if b["extra_info"]["case_id"] == CASE]
        benchmark["extra_info"]["median_latency_s"] = base_median_s
        PLANTERS[key][1](benchmark, grow)
        paths.append(tmp_path / f"{name}-{key}-{factor}.json")
        paths[-1].write_text(json.dumps(document))
    return paths[0], paths[1]


def test_the_repository_file_sets_every_threshold():
    assert load_thresholds(THRESHOLDS).keys() == DEFAULT_THRESHOLDS.keys()


def test_every_threshold_says_why_in_a_comment_above_it():
    lines = THRESHOLDS.read_text().splitlines()
    uncommented = [
        line for index, line in enumerate(lines)
        if re.match(r"\s*\w+\s*=", line) and not (index and lines[index - 1].lstrip().startswith("#"))
    ]

    assert uncommented == []


@pytest.mark.parametrize("key", sorted(PLANTERS))
@pytest.mark.parametrize("side, margin, status", [("just-under", -0.002, 0), ("just-over", +0.002, 1)])
def test_planted_regression_against_the_repository_thresholds(tmp_path, key, side, margin, status):
    allowance = load_thresholds(THRESHOLDS)[key]

    result = compare(*planted(tmp_path, key, 1 + allowance + margin), "--thresholds", THRESHOLDS)

    assert result.returncode == status, result.stdout + result.stderr
    if status:
        label = PLANTERS[key][0]
        assert f"llama/bfloat16/4bit-nf4-nested: {label} +" in result.stdout
        assert f"allowed +{allowance:.1%}" in result.stdout


def test_a_flag_overrides_the_file(tmp_path):
    allowance = load_thresholds(THRESHOLDS)["max_latency_regression"]
    base, new = planted(tmp_path, "max_latency_regression", 1 + allowance + 0.05)

    from_file = compare(base, new, "--thresholds", THRESHOLDS)
    overridden = compare(
        base, new, "--thresholds", THRESHOLDS, "--max-latency-regression", f"{(allowance + 0.10) * 100}%"
    )

    assert (from_file.returncode, overridden.returncode) == (1, 0)


def test_the_file_overrides_the_defaults(tmp_path):
    loose = tmp_path / "loose.toml"
    loose.write_text('# wide open, for this test\nmax_latency_regression = "50%"\n')
    base, new = planted(tmp_path, "max_latency_regression", 1.30)

    assert (compare(base, new).returncode, compare(base, new, "--thresholds", loose).returncode) == (1, 0)


@pytest.mark.parametrize("side, margin_s, status", [("just-under", -0.005, 0), ("just-over", +0.005, 1)])
def test_a_short_load_must_also_grow_beyond_the_latency_floor(tmp_path, side, margin_s, status):
    floor_s = load_thresholds(THRESHOLDS)["latency_floor_s"]
    base_s = 0.030  # a tiny-checkpoint load: any growth near the floor is many times the percentage
    factor = (base_s + floor_s + margin_s) / base_s
    base, new = planted(tmp_path, "max_latency_regression", factor, base_median_s=base_s)

    result = compare(base, new, "--thresholds", THRESHOLDS)

    assert result.returncode == status, result.stdout
    if status:
        assert f"and +{floor_s * 1000:.1f} ms)" in result.stdout


def test_the_floor_flag_overrides_the_file(tmp_path):
    base, new = planted(tmp_path, "max_latency_regression", 2.0, base_median_s=0.030)

    assert compare(base, new, "--thresholds", THRESHOLDS, "--latency-floor-ms", "0").returncode == 1


@pytest.mark.parametrize(
    "content, message",
    [
        ('max_latency_regresion = "15%"\n',
         "unknown key(s) ['max_latency_regresion']; "
         "accepted: ['latency_floor_ms', 'max_latency_regression', 'max_memory_regression']"),
        ("max_memory_regression = 2\n",
         "max_memory_regression = 2 is not accepted; accepted: a percentage string such as \"2%\""),
        ('latency_floor_ms = "50 ms"\n',
         "latency_floor_ms = '50 ms' is not accepted; accepted: a number of milliseconds >= 0 such as 50"),
        ('max_memory_regression = "-2%"\n', "max_memory_regression: '-2%' is negative"),
        ("max_memory_regression = \n", "not valid TOML"),
    ],
    ids=["misspelt-key", "bare-number", "floor-as-string", "negative", "bad-toml"],
)
def test_a_bad_thresholds_file_is_a_one_line_error_exit_2(tmp_path, content, message):
    path = tmp_path / "thresholds.toml"
    path.write_text(content)

    result = compare(RECORDED, RECORDED, "--thresholds", path)

    assert (result.returncode, result.stderr.count("\n")) == (2, 1), result.stderr
    assert result.stderr.startswith(f"error: {path}: ")
    assert message in result.stderr


def test_a_missing_thresholds_file_is_a_one_line_error_exit_2(tmp_path):
    result = compare(RECORDED, RECORDED, "--thresholds", tmp_path / "absent.toml")

    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {tmp_path / 'absent.toml'}: cannot read")


# -- `report noise`: the measurement the thresholds' comments cite


def noise(*paths) -> Result:
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        returncode = main(["noise", *map(str, paths)])
    return Result(returncode, stdout.getvalue(), stderr.getvalue())


def test_noise_reports_the_spread_of_each_case_and_its_distribution(tmp_path):
    base, slower_one = planted(tmp_path, "max_latency_regression", 1.25)

    result = noise(base, slower_one, base)

    assert result.returncode == 0, result.stderr
    summary = [
        line for line in result.stdout.splitlines()
        if line.startswith("| median latency |") or line.startswith("| peak memory |")
    ]
    assert summary == [
        "| median latency | 51 | 0.0% | 0.0% | 25.0% | llama/bfloat16/4bit-nf4-nested |",
        "| peak memory | 51 | 0.0% | 0.0% | 0.0% | gpt2/auto/8bit |",  # all equal: the first case
    ]


def test_noise_needs_two_runs():
    result = noise(RECORDED)

    message = "error: noise needs at least 2 runs of the same benchmark, got 1\n"
    assert (result.returncode, result.stderr) == (2, message)


def test_the_committed_noise_tables_are_what_the_committed_runs_give():
    folder = ROOT / "benchmarks" / "baselines" / "cpu"
    recorded_tables = (folder / "NOISE.md").read_text()

    for runs in ([5, 6], [1, 2, 3, 4], [1, 2, 3, 4, 5, 6]):
        summary = noise(*(folder / f"run-{n}.json.gz" for n in runs)).stdout.split("\n\n")[1]
        assert summary in recorded_tables, f"NOISE.md lacks the table of runs {runs}:\n{summary}"
