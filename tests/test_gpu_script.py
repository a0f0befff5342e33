"""The GPU run's scripts (scripts/gpu/), checked on CPU in seconds: shell syntax, the bundling into
what the device tool brings back, both time caps, and that the names the scripts select by still
exist. The full dry run (`run-on-device.sh --cpu-dry-run`, minutes) is left to a person."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "scripts" / "gpu"
RUN = GPU / "run-on-device.sh"
needs_bash = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None, reason="requires bash and timeout"
)


def load_bundle():
    spec = importlib.util.spec_from_file_location("gpu_bundle", GPU / "bundle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_bash
@pytest.mark.parametrize("script", ["prepare-wheels.sh", "run-on-device.sh"])
def test_shell_syntax(script):
    result = subprocess.run(["bash", "-n", str(GPU / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_bundle_stays_within_what_comes_back(tmp_path):
    bundle = load_bundle()
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "a" / "b" / "c").mkdir(parents=True)
    (work / "a" / "b" / "c" / "deep.txt").write_text("four folders down: only in the tarball")
    for index in range(10):
        (work / f"key{index}.json").write_text("{}" * 100)
    (work / "bad name.md").write_text("x")
    (work / "huge.bin").write_bytes(os.urandom(bundle.MAX_FILE_BYTES + 1024))  # incompressible
    keys = ["bad name.md", "huge.bin", *(f"key{index}.json" for index in range(10)), "a/b/c/deep.txt", "missing.json"]

    notes = bundle.bundle(work, out, keys)

    assert bundle.limit_problems(out) == []
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == bundle.MAX_FILES and "results.tar.gz" in files
    assert files == sorted(["results.tar.gz", *(f"key{index}.json" for index in range(7))])
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
        left_out = tar.extractfile("LEFT_OUT.txt").read().decode()
    assert "huge.bin" not in names and left_out.startswith("huge.bin\t")
    assert {"a/b/c/deep.txt", "bad name.md", "key9.json"} <= set(names)
    assert any("huge.bin" in note for note in notes) and any("bad name.md" in note for note in notes)


def test_bundle_check_refuses_what_would_not_come_back(tmp_path):
    bundle = load_bundle()
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c" / "too-deep.txt").write_text("x")
    (tmp_path / "odd name.txt").write_text("x")
    for index in range(8):
        (tmp_path / f"f{index}").write_text("x")

    problems = bundle.limit_problems(tmp_path)

    assert any("more than 2 folders down" in p for p in problems)
    assert any("odd name.txt" in p for p in problems)
    assert any("10 files, over 8" in p for p in problems)
    assert bundle.main(["--check", str(tmp_path)]) == 1


def run_pytest_with_deadline(tmp_path, test_source, env_extra):
    (tmp_path / "test_toy.py").write_text(test_source)
    env = {**os.environ, "PYTHONPATH": str(GPU), "POLICYLOAD_PHASE_STOPPED": str(tmp_path / "stopped"), **env_extra}
    command = [
        sys.executable, "-m", "pytest", "test_toy.py", "-p", "phase_deadline", "-p", "no:cacheprovider",
        "-p", "no:randomly", "-p", "no:xdist", "--rootdir", str(tmp_path), "-c", os.devnull,
        "--junitxml", str(tmp_path / "junit.xml"),
    ]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return result, time.monotonic() - started


def test_soft_cap_stops_between_tests_and_keeps_the_junit(tmp_path):
    source = "import time, pytest\n@pytest.mark.parametrize('i', range(5))\ndef test_t(i):\n    time.sleep(0.2)\n"
    result, _ = run_pytest_with_deadline(tmp_path, source, {"POLICYLOAD_PHASE_DEADLINE": str(time.time() - 1)})

    assert result.returncode == 2, result.stdout + result.stderr  # interrupted, not failed
    assert "phase time cap reached after test_toy.py::test_t[0]" in (tmp_path / "stopped").read_text()
    assert 'tests="1"' in (tmp_path / "junit.xml").read_text()


def test_soft_cap_after_the_last_test_is_no_cut(tmp_path):
    source = "def test_only():\n    pass\n"
    result, _ = run_pytest_with_deadline(tmp_path, source, {"POLICYLOAD_PHASE_DEADLINE": str(time.time() - 1)})

    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "stopped").exists()


def test_hard_cap_keeps_the_benchmarks_that_completed(tmp_path):
    """SIGTERM (what `timeout` sends at a phase's hard cap) in the middle of the second benchmark."""
    pytest.importorskip("pytest_benchmark")
    started = tmp_path / "second-started"
    (tmp_path / "test_toy.py").write_text(
        "import pathlib, time, pytest\n@pytest.mark.parametrize('i', range(3))\n"
        "def test_b(benchmark, i):\n"
        f"    if i == 1:\n        pathlib.Path({str(started)!r}).touch()\n"
        "    benchmark.pedantic(lambda: time.sleep(0.01 if i == 0 else 60), rounds=1)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(GPU), "POLICYLOAD_PHASE_STOPPED": str(tmp_path / "stopped")}
    command = [
        sys.executable, "-m", "pytest", "test_toy.py", "-p", "phase_deadline", "-p", "no:cacheprovider",
        "-p", "no:randomly", "-p", "no:xdist", "--rootdir", str(tmp_path), "-c", os.devnull,
        "--benchmark-json", str(tmp_path / "bench.json"),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while not started.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)  # into the sleep of the second benchmark
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0].decode()

    assert process.returncode == 2, output  # interrupted
    names = [b["name"] for b in json.loads((tmp_path / "bench.json").read_text())["benchmarks"]]
    assert names == ["test_b[0]"]  # the interrupted one dropped, not the whole file
    assert "SIGTERM" in (tmp_path / "stopped").read_text()


@needs_bash
def test_run_phase_caps_skips_and_bundles(tmp_path):
    env = {
        **os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "SITE": str(tmp_path / "site"),
        "POLICYLOAD_GPU_DRY_RUN": "1", "DEADLINE_S": "100", "RESERVE_S": "0", "GRACE_S": "1", "MIN_PHASE_S": "1",
        "BUNDLE_PYTHON": sys.executable,
    }
    phases = "run_phase slow 2 sleep 30; MIN=500 run_phase late 10 true; run_phase fine 10 true"
    script = f'source "{RUN}"; configure; {phases}'
    started = time.monotonic()
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - started

    assert result.returncode == 0, result.stdout + result.stderr
    assert seconds < 20
    rows = [line.split("\t") for line in (tmp_path / "work" / "phases.tsv").read_text().splitlines()]
    assert [(row[0], row[1], row[2]) for row in rows] == [
        ("slow", "cut at the time cap", "124"), ("late", "skipped", "-"), ("fine", "ok", "0"),
    ]
    assert {"results.tar.gz", "SUMMARY.md"} <= {p.name for p in (tmp_path / "out").iterdir()}
    assert "| slow | cut at the time cap | 124 |" in (tmp_path / "out" / "SUMMARY.md").read_text()


def script_default(name: str) -> str:
    """The device default of VAR in run-on-device.sh (`VAR="${VAR:-default}"`, the second one)."""
    values = re.findall(rf'{name}="\$\{{{name}:-([^}}]*)\}}"', RUN.read_text())
    return values[-1]


def test_the_names_the_run_selects_by_still_exist():
    for path in script_default("CUDA_TESTS").split():
        assert (ROOT / path).exists(), f"run-on-device.sh selects {path}, which is gone: update CUDA_TESTS"
    assert "def test_simulated_placement_matches_trl" in (ROOT / "conformance" / "test_placement.py").read_text()
    from fixtures.realsize import REALSIZE_ARCHITECTURES

    selected = script_default("REALSIZE_K").split(" or ") + [script_default("REALSIZE8B_K")]
    assert sorted(selected) == sorted(REALSIZE_ARCHITECTURES)
    from benchmarks.matrix import Checkpoint, cases

    ids = {case.id for case in cases([Checkpoint(name, "/x", "tiny") for name in ("llama", "qwen2", "gpt2")])}
    dry_run_k = re.search(r'TINY_K="\$\{TINY_K:-([^}]*)\}"', RUN.read_text()).group(1)
    assert set(dry_run_k.split(" or ")) <= ids


def test_prepare_wheels_finds_its_pins():
    pins = (ROOT / "constraints" / "newest.txt").read_text() + (ROOT / "constraints" / "base.txt").read_text()
    for name in ("trl", "transformers", "datasets", "bitsandbytes", "peft"):
        assert re.search(rf"^{name}==\S+", pins, re.M), f"prepare-wheels.sh reads the {name} pin from constraints/"
