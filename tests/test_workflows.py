"""The GitHub workflows: valid against GitHub's schema, running the commands the README and the
documentation site (docs/) document,
and the nightly's shell steps (checkpoint options, regression gate) run here with stand-ins.

The schema check is `check-jsonschema --builtin-schema vendor.github-workflows`, which validates
against the schema vendored in the check-jsonschema wheel: no network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

import policyload

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / ".github" / "workflows" / "ci.yml"
NIGHTLY = ROOT / ".github" / "workflows" / "nightly-gpu.yml"
SWEEP = ROOT / ".github" / "workflows" / "sweep.yml"
DOCS = ROOT / ".github" / "workflows" / "docs.yml"
RECORDED = ROOT / "tests" / "data" / "bench-cpu-quick.json"
#: The documentation page of the nightly job's commands.
NIGHTLY_PAGE = ROOT / "docs" / "nightly.md"
#: `tox -e ENVS` or `tox -m LABEL` (also `$tox ...`, as .ci/run writes it), options after it dropped.
TOX_COMMAND = re.compile(r"(?<![\w/.-])\$?tox\s+(-[em])\s+([\w.,-]+)")


def load_workflow(path: Path) -> dict:
    # YAML 1.2 (ruamel): `on:` stays the string "on", where PyYAML's YAML 1.1 reads it as True.
    return YAML(typ="safe").load(path.read_text())


def run_steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]


def step(workflow: dict, step_id: str) -> dict:
    (found,) = [s for job in workflow["jobs"].values() for s in job["steps"] if s.get("id") == step_id]
    return found


def tox_commands(text: str) -> set[str]:
    """Every tox invocation in shell text, as `tox -e ENVS` / `tox -m LABEL` (posargs and comments dropped)."""
    commands = set()
    for line in text.splitlines():
        line = line.split(" #", 1)[0]
        commands |= {f"tox {flag} {value}" for flag, value in TOX_COMMAND.findall(line)}
    return commands


def documentation() -> list[Path]:
    """README.md and every page of the documentation site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def code_blocks(markdown: str) -> str:
    return "\n".join(re.findall(r"^```[\w-]*\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL))


def commands_ci_runs() -> set[str]:
    """The tox commands of ci.yml's run steps, with `bash .ci/run` read through."""
    commands = set()
    for run_step in run_steps(load_workflow(CI)):
        commands |= tox_commands(run_step["run"])
        if run_step["run"].strip() == "bash .ci/run":
            commands |= tox_commands((ROOT / ".ci" / "run").read_text())
    return commands


def commands_nightly_runs() -> set[str]:
    return set().union(*(tox_commands(s["run"]) for s in run_steps(load_workflow(NIGHTLY))))


def test_tox_commands_reads_shell_and_readme_forms():
    text = """
        $tox -e conformance,unit
        $tox -m trl-matrix --skip-env '^conformance$'
        tox -e bench -- --quick          # the main job
        .ci-venv/bin/python -m pip install tox
    """

    assert tox_commands(text) == {"tox -e conformance,unit", "tox -m trl-matrix", "tox -e bench"}


def test_workflows_are_valid_against_the_github_workflow_schema():
    result = subprocess.run(
        [
            sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
            str(CI), str(NIGHTLY), str(SWEEP), str(DOCS),
        ],
        capture_output=True, text=True,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_sweep_runs_tox_sweep_weekly_on_a_hosted_cpu_runner_and_uploads_the_report():
    workflow = load_workflow(SWEEP)
    (job,) = workflow["jobs"].values()
    (upload,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]

    assert (
        sorted(workflow["on"]),
        job["runs-on"],
        set().union(*(tox_commands(s["run"]) for s in run_steps(workflow))),
        upload["with"]["path"],
    ) == (["schedule", "workflow_dispatch"], "ubuntu-latest", {"tox -e sweep"}, "out/sweep/")


def test_docs_builds_the_site_with_tox_draws_the_history_and_deploys_to_pages():
    workflow = load_workflow(DOCS)
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    (upload,) = [s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact@")]

    assert {
        "triggers": sorted(workflow["on"]),
        "after": workflow["on"]["workflow_run"]["workflows"],
        "tox": set().union(*(tox_commands(s["run"]) for s in run_steps(workflow))),
        "site": upload["with"]["path"],
        "deploys": [s.get("uses", "").split("@")[0] for s in deploy["steps"]],
        "permissions": workflow["permissions"],
    } == {
        "triggers": ["push", "workflow_dispatch", "workflow_run"],
        "after": ["nightly-gpu"],
        "tox": {"tox -e docs"},
        "site": "site",
        "deploys": ["actions/deploy-pages"],
        "permissions": {"contents": "read", "pages": "write", "id-token": "write"},
    }
    assert "policyload.report history" in step(workflow, "history")["run"]
    assert "--html site/history/index.html" in step(workflow, "history")["run"]


def test_ci_runs_ci_run_on_push_and_pull_request_on_a_hosted_cpu_runner():
    workflow = load_workflow(CI)
    (job,) = workflow["jobs"].values()
    (cache,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/cache@")]

    assert {
        "triggers": sorted(workflow["on"]),
        "runs-on": job["runs-on"],
        "run steps": [s["run"].strip() for s in run_steps(workflow)],
        "torch index": job["env"]["PIP_EXTRA_INDEX_URL"],
        "cached": cache["with"]["path"].split(),
    } == {
        "triggers": ["pull_request", "push"],
        "runs-on": "ubuntu-latest",
        "run steps": ["bash .ci/run"],
        "torch index": "https://download.pytorch.org/whl/cpu",
        "cached": ["~/.cache/pip", "~/.cache/policyload"],
    }


def test_documented_commands_outside_the_nightly_page_are_what_ci_runs():
    documented = {
        path.relative_to(ROOT).as_posix(): tox_commands(code_blocks(path.read_text()))
        for path in documentation()
        if path != NIGHTLY_PAGE
    }

    assert documented["README.md"], "README.md documents no tox command in a code block"
    never_run = {page: commands - commands_ci_runs() for page, commands in documented.items()}
    assert {page: commands for page, commands in never_run.items() if commands} == {}, (
        "documented, never run by ci.yml / .ci/run"
    )


def test_nightly_page_documents_exactly_what_the_nightly_runs():
    assert tox_commands(code_blocks(NIGHTLY_PAGE.read_text())) == commands_nightly_runs()


def test_nightly_runs_on_schedule_and_by_hand_on_a_self_hosted_gpu_runner():
    workflow = load_workflow(NIGHTLY)
    (job,) = workflow["jobs"].values()

    assert (sorted(workflow["on"]), job["runs-on"], commands_nightly_runs()) == (
        ["schedule", "workflow_dispatch"],
        ["self-hosted", "linux", "gpu"],
        {"tox -e bench-gpu", "tox -e bench-gpu-multi"},
    )


def test_nightly_runs_the_multi_gpu_env_only_with_more_than_one_gpu():
    workflow = load_workflow(NIGHTLY)

    assert (step(workflow, "gpus")["run"].count("nvidia-smi -L | wc -l"), step(workflow, "multi")["if"]) == (
        1, "steps.gpus.outputs.count > 1",
    )


def test_nightly_gate_reads_the_thresholds_file_of_the_repository():
    gate = step(load_workflow(NIGHTLY), "gate")["run"]

    assert "compare" in gate and "--thresholds benchmarks/thresholds.toml" in gate
    assert (ROOT / "benchmarks" / "thresholds.toml").is_file()


def test_nightly_gate_runs_both_comparisons_not_one_or_the_other():
    """The last successful nightly catches a sudden change, the pinned baseline slow drift: both, not a fallback."""
    gate = step(load_workflow(NIGHTLY), "gate")["run"]
    calls = [line.strip() for line in gate.splitlines() if re.match(r"\s*gate\s", line)]

    assert calls == [
        'gate previous/bench-gpu.json "the last successful nightly on $DEVICE"',
        'gate "$pinned" "the pinned baseline $pinned"',
    ]
    assert 'pinned="benchmarks/baselines/$DEVICE/bench-gpu.json"' in gate
    assert "elif" not in gate
    assert gate.count("$REPORT compare") == 1  # inside gate(), which both calls run


# -- the nightly's shell steps, run here as the runner runs them, with stand-ins for tox and GitHub


def run_step_script(script: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """Run a `run:` block as GitHub does on Linux (`bash --noprofile --norc -eo pipefail`)."""
    path = cwd / "step.sh"
    path.write_text(script)
    summary = cwd / "summary.md"
    summary.touch()
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)], cwd=cwd, capture_output=True, text=True,
        env={"PATH": os.environ["PATH"], "HOME": str(cwd), "GITHUB_STEP_SUMMARY": str(summary), **env},
    )


@pytest.mark.parametrize(
    "checkpoints_input, runner_checkpoints, expected",
    [
        ("", "", ["-e", "bench-gpu", "--"]),
        ("", "/models/qwen2.5-0.5b meta-llama/Llama-3.2-1B",
         ["-e", "bench-gpu", "--", "--checkpoint", "/models/qwen2.5-0.5b", "--checkpoint", "meta-llama/Llama-3.2-1B"]),
        ("/data/ckpt", "/models/ignored", ["-e", "bench-gpu", "--", "--checkpoint", "/data/ckpt"]),
    ],
    ids=["none", "runner-env", "dispatch-input-wins"],
)
def test_nightly_bench_step_passes_checkpoints_as_options(tmp_path, checkpoints_input, runner_checkpoints, expected):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tox").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$TOX_ARGV"\n')
    (bin_dir / "tox").chmod(0o755)
    script = step(load_workflow(NIGHTLY), "bench")["run"]

    result = run_step_script(script, tmp_path, {
        "PATH": f"{bin_dir}:{os.environ['PATH']}", "TOX_ARGV": str(tmp_path / "argv"),
        "CHECKPOINTS_INPUT": checkpoints_input, "POLICYLOAD_BENCH_CHECKPOINTS": runner_checkpoints,
    })

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "argv").read_text().splitlines() == expected


DEVICE = "cpu-x86_64-2-cores"  # the recorded run's device, as `python -m policyload.report device` names it


def gate_workspace(tmp_path: Path, new: dict, previous: dict | None = None, committed: dict | None = None) -> Path:
    """A checkout as the gate step sees it: out/bench-gpu.json, maybe previous/ and a committed baseline."""
    (tmp_path / "out").mkdir(parents=True)
    (tmp_path / "out" / "bench-gpu.json").write_text(json.dumps(new))
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(ROOT / "benchmarks" / "thresholds.toml", tmp_path / "benchmarks" / "thresholds.toml")
    if previous is not None:
        (tmp_path / "previous").mkdir()
        (tmp_path / "previous" / "bench-gpu.json").write_text(json.dumps(previous))
    if committed is not None:
        folder = tmp_path / "benchmarks" / "baselines" / DEVICE
        folder.mkdir(parents=True)
        (folder / "bench-gpu.json").write_text(json.dumps(committed))
    return tmp_path


def run_gate(workspace: Path, accept_removed: str = "") -> tuple[int, str]:
    script = step(load_workflow(NIGHTLY), "gate")["run"]
    result = run_step_script(script, workspace, {
        "REPORT": f"{sys.executable} -m policyload.report", "DEVICE": DEVICE, "ACCEPT_REMOVED_INPUT": accept_removed,
        # The report of the policyload these tests import (a checkout's src/ first on the path, say), not another.
        "PYTHONPATH": str(Path(policyload.__file__).resolve().parents[1]),
    })
    return result.returncode, result.stdout + (workspace / "summary.md").read_text()


def slower(run: dict, factor: float) -> dict:
    slowed = json.loads(json.dumps(run))
    for benchmark in slowed["benchmarks"]:
        benchmark["extra_info"]["median_latency_s"] *= factor  # the gated latency: the tracker's
    return slowed


@pytest.fixture
def recorded() -> dict:
    return json.loads(RECORDED.read_text())


def test_device_name_of_the_recorded_run():
    command = [sys.executable, "-m", "policyload.report", "device", str(RECORDED)]
    result = subprocess.run(command, capture_output=True, text=True)

    assert (result.returncode, result.stdout.strip()) == (0, DEVICE)


def test_gate_passes_against_an_identical_previous_nightly(tmp_path, recorded):
    status, output = run_gate(gate_workspace(tmp_path, recorded, previous=recorded))

    assert status == 0, output
    assert f"comparing with the last successful nightly on {DEVICE}" in output


def test_gate_fails_on_a_regression_against_the_previous_nightly(tmp_path, recorded):
    status, output = run_gate(gate_workspace(tmp_path, slower(recorded, 2.0), previous=recorded))

    assert status == 1, output
    assert "regression(s):" in output and "median latency +100.0%" in output


def test_gate_compares_with_the_pinned_baseline_alone_when_there_is_no_previous_nightly(tmp_path, recorded):
    status, output = run_gate(gate_workspace(tmp_path, slower(recorded, 2.0), committed=recorded))

    assert status == 1, output
    assert f"comparing with the pinned baseline benchmarks/baselines/{DEVICE}/bench-gpu.json" in output
    assert "last successful nightly" not in output


def test_gate_compares_with_both_baselines_and_keeps_both_outputs(tmp_path, recorded):
    workspace = gate_workspace(tmp_path, recorded, previous=recorded, committed=recorded)

    status, output = run_gate(workspace)

    assert status == 0, output
    pinned = f"benchmarks/baselines/{DEVICE}/bench-gpu.json"
    assert f"comparing with the last successful nightly on {DEVICE}" in output
    assert f"comparing with the pinned baseline {pinned}" in output
    summary = (workspace / "summary.md").read_text()
    assert f"### Regression gate: against the last successful nightly on {DEVICE} (exit 0)" in summary
    assert f"### Regression gate: against the pinned baseline {pinned} (exit 0)" in summary
    assert (workspace / "out" / "compare.txt").read_text() == (
        f"== against the last successful nightly on {DEVICE} (previous/bench-gpu.json): exit 0\n"
        "no regression in 51 common case(s)\n\n"
        f"== against the pinned baseline {pinned} ({pinned}): exit 0\n"
        "no regression in 51 common case(s)\n\n"
    )


def test_gate_fails_on_slow_drift_that_each_night_passes(tmp_path, recorded):
    """+19% a night is under the 20% allowance against last night, but two nights are +41.6% on the pin."""
    workspace = gate_workspace(tmp_path, slower(recorded, 1.19 * 1.19), previous=slower(recorded, 1.19),
                               committed=recorded)

    status, output = run_gate(workspace)

    assert status == 1, output
    compared = (workspace / "out" / "compare.txt").read_text()
    assert f"against the last successful nightly on {DEVICE} (previous/bench-gpu.json): exit 0" in compared
    assert f"against the pinned baseline benchmarks/baselines/{DEVICE}/bench-gpu.json (" in compared
    assert "bench-gpu.json): exit 1" in compared
    assert "llama/bfloat16/4bit-nf4-nested: median latency +41.6%" in compared


def test_gate_fails_when_the_first_comparison_fails_and_the_second_passes(tmp_path, recorded):
    """A pin from before a speed-up: +50% on last night is still -25% on the pin; the step fails."""
    workspace = gate_workspace(tmp_path, slower(recorded, 1.5), previous=recorded, committed=slower(recorded, 2.0))

    status, output = run_gate(workspace)

    assert status == 1, output
    compared = (workspace / "out" / "compare.txt").read_text()
    assert f"against the last successful nightly on {DEVICE} (previous/bench-gpu.json): exit 1" in compared
    assert "bench-gpu.json): exit 0" in compared


def test_gate_fails_when_a_case_skips_in_the_new_run_unless_accepted(tmp_path, recorded):
    skipped = json.loads(json.dumps(recorded))
    skipped["benchmarks"] = [b for b in skipped["benchmarks"] if b["extra_info"]["case_id"] != "qwen2-bf16-8bit"]

    status, output = run_gate(gate_workspace(tmp_path / "refused", skipped, previous=recorded, committed=recorded))
    accepted_status, accepted = run_gate(
        gate_workspace(tmp_path / "accepted", skipped, previous=recorded, committed=recorded),
        accept_removed="llama/none/none qwen2/bfloat16/8bit",
    )

    assert status == 1, output
    assert output.count("\n  qwen2/bfloat16/8bit\n") == 4  # both comparisons, printed and in the summary
    assert accepted_status == 0, accepted
    assert accepted.count("note: qwen2/bfloat16/8bit: only in base, removal accepted") == 4


def test_gate_without_any_baseline_warns_and_passes(tmp_path, recorded):
    status, output = run_gate(gate_workspace(tmp_path, recorded))

    assert status == 0, output
    assert f"::warning::no baseline for {DEVICE}" in output


def test_gate_fails_on_runs_from_different_devices(tmp_path, recorded):
    other = json.loads(json.dumps(recorded))
    other["machine_info"]["policyload"]["device"] = "NVIDIA H200"

    status, output = run_gate(gate_workspace(tmp_path, recorded, previous=other))

    assert status == 2, output
    assert "refusing to compare runs from different devices" in output


# -- the nightly keeps each run on a branch and draws the history page from all of them


def git(*args, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_nightly_keeps_each_run_on_the_history_branch_and_draws_every_run_kept(tmp_path, recorded):
    """The history step, run twice as two nights would run it, against a local origin."""
    origin, seed, workspace = tmp_path / "origin.git", tmp_path / "seed", tmp_path / "workspace"
    git("init", "--quiet", "--bare", "-b", "main", str(origin), cwd=tmp_path)
    git("clone", "--quiet", str(origin), str(seed), cwd=tmp_path)
    (seed / "README.md").write_text("code\n")
    git("add", "README.md", cwd=seed)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "code", cwd=seed)
    git("push", "--quiet", "origin", "main", cwd=seed)
    script = step(load_workflow(NIGHTLY), "history")["run"]
    env = {"REPORT": f"{sys.executable} -m policyload.report", "DEVICE": DEVICE,
           "PYTHONPATH": str(Path(policyload.__file__).resolve().parents[1])}

    for night, started in enumerate(("2026-12-01T02:17:00+00:00", "2026-12-02T02:17:00+00:00")):
        if night:
            time.sleep(1.1)  # the run's file is named by the second it was kept
        shutil.rmtree(workspace, ignore_errors=True)
        git("clone", "--quiet", str(origin), str(workspace), cwd=tmp_path)
        gate_workspace(workspace, {**recorded, "datetime": started})
        result = run_step_script(script, workspace, env)
        assert result.returncode == 0, result.stdout + result.stderr

    kept = git("ls-tree", "-r", "--name-only", "nightly-history", cwd=origin).split()
    assert len(kept) == 2 and all(re.fullmatch(rf"runs/{DEVICE}/\d{{8}}T\d{{6}}Z\.json\.gz", name) for name in kept)
    assert "main" in git("branch", "--list", "main", cwd=origin)  # the code branch untouched
    page = (workspace / "out" / "history.html").read_text()
    assert "2 run(s), oldest first" in page
