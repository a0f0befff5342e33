"""pytest plugin of scripts/gpu/run-on-device.sh (`-p phase_deadline`): a phase's time cap that
keeps what the phase measured.

- POLICYLOAD_PHASE_DEADLINE (Unix time, seconds): once it has passed, pytest stops after the test
  that is running, as after `-x`: the session finishes normally, so pytest-benchmark still writes
  its `--benchmark-json` and junitxml its `--junitxml`, with every test that completed.
- SIGTERM (the hard cap: `timeout` sends it when a single test overruns) becomes a
  KeyboardInterrupt, which pytest also finishes cleanly; SIGINT is made to do the same even where
  the machine's launcher started this process with SIGINT ignored.
- POLICYLOAD_PHASE_STOPPED (a path): written with the reason when either cap stopped the session,
  so the script can tell "cut at the time cap" from "failed".
"""

from __future__ import annotations

import os
import signal
import time

import pytest


def _deadline() -> float | None:
    value = os.environ.get("POLICYLOAD_PHASE_DEADLINE", "")
    return float(value) if value else None


def _note_stop(reason: str) -> None:
    path = os.environ.get("POLICYLOAD_PHASE_STOPPED")
    if path:
        with open(path, "a") as file:
            file.write(reason + "\n")


def _terminate(signum, frame):
    _note_stop(f"signal {signal.Signals(signum).name}: hard time cap")
    raise KeyboardInterrupt(f"{signal.Signals(signum).name}: the phase's hard time cap")


def pytest_configure(config):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    yield
    deadline = _deadline()
    # After the last test there is nothing to stop: the phase simply ended.
    if nextitem is not None and deadline is not None and time.time() >= deadline and not item.session.shouldstop:
        reason = f"phase time cap reached after {item.nodeid}"
        _note_stop(reason)
        item.session.shouldstop = reason


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Drop the benchmark a hard cap interrupted before its first round: pytest-benchmark would
    fail on its empty statistics and then write no JSON at all, losing the cases that completed."""
    benchmark_session = getattr(session.config, "_benchmarksession", None)
    if benchmark_session is not None:
        kept = [bench for bench in benchmark_session.benchmarks if _has_data(bench)]
        if len(kept) != len(benchmark_session.benchmarks):
            dropped = len(benchmark_session.benchmarks) - len(kept)
            _note_stop(f"dropped {dropped} benchmark(s) interrupted before a round")
            benchmark_session.benchmarks[:] = kept
    yield


def _has_data(bench) -> bool:
    stats = getattr(bench, "stats", None)
    data = getattr(stats, "data", None)
    return bool(data) if data is not None else True
