"""Options, markers and fixtures of the load benchmarks.

    pytest benchmarks --benchmark-json out/bench.json      tiny checkpoints, full matrix
    pytest benchmarks --quick                              1 round, no warm-up (also POLICYLOAD_BENCH_QUICK=1)
    pytest benchmarks --realsize                           + Qwen2-0.5B, Llama-3.2-1B, Llama-3.1-8B shapes
    pytest benchmarks -k dpo                               only the DPO bill cases (benchmarks/test_dpo.py)
    pytest benchmarks -k train                             only the training-step cases (benchmarks/test_train.py)
    pytest benchmarks --checkpoint PATH_OR_HUB_ID          + any local or cached checkpoint (repeatable)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.dpo_cases import dpo_cases
from benchmarks.environment import device_info, library_versions
from benchmarks.matrix import Checkpoint, cases, checkpoint_token
from benchmarks.outcomes import error_outcome
from benchmarks.train_cases import train_cases
from fixtures.checkpoints import TINY_ARCHITECTURES, tiny_checkpoint
from fixtures.realsize import REALSIZE_ARCHITECTURES, realsize_path

ROUNDS, WARMUP_ROUNDS = 5, 1
# Numbers measured once per session (cold import time, host-to-device bandwidth), for machine_info.
SESSION_INFO = pytest.StashKey[dict]()
# Every case's outcome (measured, skipped with reason, failed, oom), for the JSON: pytest-benchmark
# leaves the benchmarks of failed and skipped cases out of its "benchmarks" list.
OUTCOMES = pytest.StashKey[dict]()
#: The same for the DPO bill cases (benchmarks/test_dpo.py), in the JSON's `policyload_dpo_outcomes`.
DPO_OUTCOMES = pytest.StashKey[dict]()
#: The same for the training-step cases (benchmarks/test_train.py), in `policyload_train_outcomes`.
TRAIN_OUTCOMES = pytest.StashKey[dict]()


def pytest_addoption(parser):
    group = parser.getgroup("policyload benchmarks")
    group.addoption(
        "--realsize", action="store_true", help="also run the real-size checkpoints (built on first use, GBs)"
    )
    group.addoption(
        "--checkpoint", action="append", default=[], metavar="PATH_OR_CACHED_HUB_ID",
        help="also benchmark this checkpoint (a folder, or a hub id already in the offline cache); repeatable",
    )
    group.addoption("--quick", action="store_true", help="1 round, no warm-up (CI); also POLICYLOAD_BENCH_QUICK=1")


def pytest_configure(config):
    # pytest-benchmark disables itself under xdist and the numbers of parallel loads would be
    # meaningless anyway (they share cores, memory bandwidth and the page cache).
    if hasattr(config, "workerinput") or getattr(config.option, "numprocesses", None):
        raise pytest.UsageError("benchmarks never run under xdist: drop -n/--numprocesses")
    json_path = getattr(config.option, "benchmark_json", None)
    if json_path:
        ensure_writable(Path(json_path))


def ensure_writable(path: Path) -> None:
    """Create the folder of `--benchmark-json PATH` and refuse a PATH that cannot be written, now.

    pytest-benchmark opens the file only when the session finishes: a missing folder (a fresh
    clone has no `out/`) or a read-only one would otherwise throw away every measurement of a
    run that took minutes. The probe file is removed again, so a refused run leaves nothing.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(21, "is a folder", str(path))
        probe = path.parent / f".{path.name}.{os.getpid()}.probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise pytest.UsageError(
            f"--benchmark-json {path}: cannot write there ({error.strerror or error}); "
            "no case was run. Name a file in a folder you can write to."
        ) from None


def quick_mode(config) -> bool:
    return config.getoption("--quick") or os.environ.get("POLICYLOAD_BENCH_QUICK", "") not in ("", "0")


def benchmark_checkpoints(config) -> list[Checkpoint]:
    checkpoints = [Checkpoint(name, str(tiny_checkpoint(name)), "tiny") for name in TINY_ARCHITECTURES]
    checkpoints += [Checkpoint(name, str(realsize_path(name)), "realsize") for name in REALSIZE_ARCHITECTURES]
    checkpoints += [Checkpoint(checkpoint_token(source), source, "user") for source in config.getoption("--checkpoint")]
    return checkpoints


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        params = [
            pytest.param(case, id=case.id, marks=[pytest.mark.realsize] if case.checkpoint.kind == "realsize" else [])
            for case in cases(benchmark_checkpoints(metafunc.config))
        ]
        metafunc.parametrize("case", params)
    if "dpo_case" in metafunc.fixturenames:
        params = [
            pytest.param(case, id=case.id, marks=[pytest.mark.realsize] if case.checkpoint.kind == "realsize" else [])
            for case in dpo_cases(benchmark_checkpoints(metafunc.config))
        ]
        metafunc.parametrize("dpo_case", params)
    if "train_case" in metafunc.fixturenames:
        params = [
            pytest.param(case, id=case.id, marks=[pytest.mark.realsize] if case.checkpoint.kind == "realsize" else [])
            for case in train_cases(benchmark_checkpoints(metafunc.config))
        ]
        metafunc.parametrize("train_case", params)


def pytest_collection_modifyitems(config, items):
    if config.getoption("--realsize"):
        return
    skip = pytest.mark.skip(reason="real-size case: run with --realsize")
    for item in items:
        if "realsize" in item.keywords:
            item.add_marker(skip)


def session_info(config) -> dict:
    """The session's measured-once numbers, kept in `config.stash` (filled by the session fixtures)."""
    return config.stash.setdefault(SESSION_INFO, {})


def pytest_report_header(config):
    versions = ", ".join(f"{name} {value}" for name, value in library_versions().items())
    mode = "quick (1 round, no warm-up)" if quick_mode(config) else f"{ROUNDS} rounds, {WARMUP_ROUNDS} warm-up"
    return [f"policyload bench: {versions}", f"policyload bench device: {device_info()['device']}; {mode}"]


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["policyload"] = {
        **library_versions(), **device_info(), "quick": quick_mode(config),
        **session_info(config),
    }


@pytest.fixture(scope="session")
def rounds(pytestconfig) -> tuple[int, int]:
    """(rounds, warm-up rounds) of every case."""
    return (1, 0) if quick_mode(pytestconfig) else (ROUNDS, WARMUP_ROUNDS)


@pytest.fixture(scope="session")
def fresh_process_server(pytestconfig):
    from policyload.measure import FreshProcessServer

    with FreshProcessServer() as server:
        session_info(pytestconfig)["cold_import_s"] = server.import_s
        yield server


@pytest.fixture(scope="session")
def host_to_device(pytestconfig) -> dict:
    """Pinned and pageable host-to-device bandwidth, once per session ({} without CUDA)."""
    import torch

    from policyload.measure import host_to_device_bandwidth

    if not torch.cuda.is_available():
        return {}
    result = host_to_device_bandwidth()
    session_info(pytestconfig).update(result)
    return result


@pytest.fixture(scope="session")
def read_bandwidth():
    """checkpoint folder -> its read bandwidths (mmap + touch: the load's path; safetensors' load_file:
    a ceiling; readinto: reference), measured once per session."""
    from policyload.measure import file_read_bandwidth, mmap_touch_bandwidth, safetensors_load_bandwidth

    measured: dict[str, dict] = {}

    def measure(folder: Path) -> dict:
        key = str(folder)
        if key not in measured:
            files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
            measured[key] = {
                **file_read_bandwidth(files), **mmap_touch_bandwidth(files), **safetensors_load_bandwidth(files),
            }
        return measured[key]

    return measure


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    params = getattr(getattr(item, "callspec", None), "params", {})
    case = params.get("case") or params.get("dpo_case") or params.get("train_case")
    if case is None:
        return
    # DPO and training cases have outcomes of their own: the load table keys its rows by
    # checkpoint/dtype/quantization.
    stash = DPO_OUTCOMES if "dpo_case" in params else TRAIN_OUTCOMES if "train_case" in params else OUTCOMES
    record = item.config.stash.setdefault(stash, {})
    base = {"case_id": case.id, "checkpoint": case.checkpoint.token, "checkpoint_kind": case.checkpoint.kind,
            "dtype": case.spec.dtype, "quantization": case.quantization}
    if "dpo_case" in params:
        base["dpo_setup"] = case.setup
    if "train_case" in params:
        base["train_setup"] = case.setup
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        record[case.id] = {**base, "outcome": "skipped", "reason": reason.removeprefix("Skipped: ")}
    elif report.failed and call.excinfo is not None:
        record[case.id] = {**base, **error_outcome(call.excinfo), "phase": report.when}
    elif report.when == "call" and report.passed:
        record[case.id] = {**base, "outcome": "measured"}


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Every case's outcome in the JSON (`policyload_outcomes`), the failed and skipped ones included."""
    output_json["policyload_outcomes"] = sorted(config.stash.get(OUTCOMES, {}).values(), key=lambda o: o["case_id"])
    dpo = config.stash.get(DPO_OUTCOMES, {})
    if dpo:
        output_json["policyload_dpo_outcomes"] = sorted(dpo.values(), key=lambda o: o["case_id"])
    train = config.stash.get(TRAIN_OUTCOMES, {})
    if train:
        output_json["policyload_train_outcomes"] = sorted(train.values(), key=lambda o: o["case_id"])
