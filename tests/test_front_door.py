"""The README's quick start as a newcomer meets it: CI runs its commands in its order, and the
main job can neither fail on a folder a fresh clone lacks nor lose a run at the finish line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands(readme: str) -> list[str]:
    """The commands of the README's "## Quick start" bash block, comments and blanks dropped."""
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def ci_commands(script: str) -> list[str]:
    """The command lines of `.ci/run`, with its tox (`$tox`, the tox of its own venv) spelled `tox`."""
    lines = [line.strip() for line in script.splitlines()]
    return [line.replace("$tox ", "tox ", 1) for line in lines if line and not line.startswith("#")]


def test_readme_quick_start_is_the_expected_three_commands():
    # Pinned by hand: if the README's quick start changes, this test and .ci/run change with it.
    assert quick_start_commands((ROOT / "README.md").read_text()) == [
        "python -m pip install tox",
        "tox -e bench",
        "tox -e conformance,unit",
    ]


def test_ci_runs_the_readme_quick_start_first_and_in_order():
    readme = quick_start_commands((ROOT / "README.md").read_text())
    ci = ci_commands((ROOT / ".ci" / "run").read_text())
    tox_runs = [line for line in ci if line.startswith("tox ")]
    readme_tox = [command for command in readme if command.startswith("tox ")]
    assert tox_runs[: len(readme_tox)] == readme_tox, (
        f".ci/run must run the README's quick start first, in order: {readme_tox}; it runs {tox_runs}"
    )
    installs = [index for index, line in enumerate(ci) if re.search(r"pip install .*\btox\b", line)]
    first_tox = ci.index(tox_runs[0])
    assert installs and installs[0] < first_tox, ".ci/run must install tox (the README's first step) before using it"


def test_ci_refuses_to_run_on_a_tree_with_leftovers_from_earlier_runs():
    script = (ROOT / ".ci" / "run").read_text()
    guard = script.index("[ -e out ]")
    assert guard < script.index("$tox -e bench"), "the fresh-clone check must come before the main job"
    assert "POLICYLOAD_FIXTURES=" in script.split("$tox -e bench")[0], "CI builds fixtures into the clone, not ~/.cache"


def collect_benchmarks(json_path: Path) -> subprocess.CompletedProcess:
    """`pytest benchmarks --collect-only --benchmark-json json_path` in a child process: the hook
    that guards the JSON runs at configure time, before collection, as in a real run."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "benchmarks"), "--collect-only", "-q", "-p", "no:cacheprovider",
         "--benchmark-json", str(json_path), "-k", "no-such-case"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


def test_benchmark_json_folder_is_created_before_any_case_runs(tmp_path):
    target = tmp_path / "out" / "nested" / "bench.json"
    result = collect_benchmarks(target)
    assert target.parent.is_dir(), result.stdout + result.stderr
    assert list(target.parent.iterdir()) == [], "the writability probe must not be left behind"


@pytest.mark.parametrize("make_blocker", ["file-in-the-way", "json-path-is-a-folder"])
def test_benchmark_json_that_cannot_be_written_is_refused_at_the_start(tmp_path, make_blocker):
    if make_blocker == "file-in-the-way":
        (tmp_path / "out").write_text("a file where the folder should be")
        target = tmp_path / "out" / "bench.json"
    else:
        target = tmp_path / "bench.json"
        target.mkdir()
    result = collect_benchmarks(target)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert f"--benchmark-json {target}: cannot write there" in result.stderr
    assert "no case was run" in result.stderr
    left = ["out"] if make_blocker == "file-in-the-way" else ["bench.json"]
    assert sorted(path.name for path in tmp_path.iterdir()) == left


def test_ci_runs_the_linter_and_the_python_310_tools():
    ci = ci_commands((ROOT / ".ci" / "run").read_text())
    assert "tox -e lint,py310-tools" in ci


FAKE_TOX = """#!/usr/bin/env bash
# A tox whose installs (--notest) fail the first $INSTALL_FAILURES times and whose test run exits $TEST_RC.
echo "$*" >> "$CALLS"
if [[ " $* " == *" --notest "* ]]; then
    failed=$(grep -c -- "--notest" "$CALLS")
    [ "$failed" -gt "$INSTALL_FAILURES" ] || exit 1
    exit 0
fi
exit "$TEST_RC"
"""


@pytest.mark.parametrize(
    ("install_failures", "test_rc", "expected_rc", "expected_calls"),
    [
        # Cut downloads: two failed installs, the third builds, the tests run once.
        (2, 0, 0, ["-e x --notest"] * 3 + ["-e x"]),
        # A failing test is never retried: one install, one run, its failure is the result.
        (0, 1, 1, ["-e x --notest", "-e x"]),
        # Three failed installs: the run fails without running the tests.
        (3, 0, 1, ["-e x --notest"] * 3),
    ],
    ids=["install-retried", "test-failure-not-retried", "install-gives-up-after-three"],
)
def test_ci_retries_installs_and_never_tests(tmp_path, install_failures, test_rc, expected_rc, expected_calls):
    fake_tox = tmp_path / "tox"
    fake_tox.write_text(FAKE_TOX)
    fake_tox.chmod(0o755)
    calls = tmp_path / "calls"
    calls.touch()
    env = {**os.environ, "CALLS": str(calls), "INSTALL_FAILURES": str(install_failures), "TEST_RC": str(test_rc),
           "TOX_BIN": str(fake_tox), "CI_RETRY_PAUSE_S": "0"}
    result = subprocess.run(["bash", "-c", f"source {ROOT / '.ci' / 'installs.sh'} && tox_run -e x"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == expected_rc, result.stderr
    assert calls.read_text().splitlines() == expected_calls


def test_ci_runs_every_tox_command_through_the_retried_install():
    script = (ROOT / ".ci" / "run").read_text()
    assert "source .ci/installs.sh" in script and "tox=tox_run" in script
    assert "/bin/tox " not in script.replace('TOX_BIN=".ci-venv/bin/tox"', ""), "a tox call that skips tox_run"
