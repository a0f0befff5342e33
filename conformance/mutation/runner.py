"""Running the child pytest processes: the baselines, then the mutants, one or two at a time.

Each run is a child process with the (mutated) copy of `src/` first on `PYTHONPATH`, so the
harness itself never imports a mutated `policyload`, and pytest stops at the first failure
(`-x`): one failing test is enough to kill a mutant, and the rest would only cost time. A mutant
is killed when a test fails, collection breaks, or the run times out (a hang is a visible fault);
it survives when every selected test passes.

Before any mutant, each selection used runs once against an unmutated copy and must pass:
otherwise a "killed" would mean nothing, and the harness stops (`HarnessError`, exit 2). The same
holds if the children would import `policyload` from anywhere but the copy.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .mutants import PACKAGE, REPO_ROOT, SOURCE_ROOT, HarnessError, Mutant, MutantList, mutated_copy

#: Every child pytest run: stop at the first failure, touch no cache, say which test failed.
PYTEST_OPTIONS = ("-x", "-q", "-p", "no:cacheprovider", "-rfE", "--no-header")
#: Wall-clock limit of one child run, seconds; a mutant that hangs past it counts as killed.
DEFAULT_TIMEOUT_S = 600
#: Which test failed, from pytest's short summary (`-rfE`).
_FAILED = re.compile(r"^(FAILED|ERROR) (.+?)(?: - .*)?$")


@dataclass
class Result:
    id: str
    status: str  # "killed", "survived", "baseline-passed", "baseline-failed"
    seconds: float
    killed_by: str | None = None
    detail: str = field(default="", repr=False)


def child_environment(copy: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return env


def imported_from(copy: Path) -> Path:
    """Where a child process with `copy` first on PYTHONPATH imports policyload from."""
    run = subprocess.run(
        [sys.executable, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"],
        env=child_environment(copy), cwd=REPO_ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if run.returncode != 0:
        raise HarnessError(f"cannot import {PACKAGE} from the copy: {run.stderr[-2000:]}")
    return Path(run.stdout.strip())


def run_selection(args: tuple[str, ...], copy: Path, timeout_s: float) -> tuple[int | None, str, float]:
    """Run pytest on `args` against `copy`: (return code, or None on timeout; output; seconds)."""
    command = [sys.executable, "-m", "pytest", *PYTEST_OPTIONS, *args]
    start = time.monotonic()
    try:
        run = subprocess.run(
            command, env=child_environment(copy), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"").decode(errors="replace") if isinstance(expired.stdout, bytes) else ""
        return None, output, time.monotonic() - start
    return run.returncode, run.stdout + run.stderr, time.monotonic() - start


def first_failure(output: str) -> str | None:
    for line in output.splitlines():
        match = _FAILED.match(line)
        if match:
            return match.group(2)
    return None


def run_mutant(mutant: Mutant, args: tuple[str, ...], timeout_s: float, source_root: Path = SOURCE_ROOT) -> Result:
    with mutated_copy(mutant, source_root) as copy:
        code, output, seconds = run_selection(args, copy, timeout_s)
    if code is None:
        return Result(mutant.id, "killed", seconds, f"timeout after {timeout_s:.0f}s", output)
    if code == 0:
        return Result(mutant.id, "survived", seconds, None, output)
    if code in (1, 2):  # a test failed, or collection broke under the mutant (the baseline collected)
        return Result(mutant.id, "killed", seconds, first_failure(output) or f"pytest exit {code}", output)
    raise HarnessError(f"mutant {mutant.id!r}: pytest exited with {code} (not a test failure):\n{output[-3000:]}")


def run_baseline(name: str, args: tuple[str, ...], timeout_s: float, source_root: Path = SOURCE_ROOT) -> Result:
    with mutated_copy(None, source_root) as copy:
        code, output, seconds = run_selection(args, copy, timeout_s)
    status = "baseline-passed" if code == 0 else "baseline-failed"
    return Result(name, status, seconds, first_failure(output), output)


def run_all(listed: MutantList, mutants: list[Mutant], jobs: int, timeout_s: float) -> list[Result]:
    """Check where the children import from, run the baselines, then every mutant, `jobs` at a
    time, printing each result as it comes; the results are in the order of `mutants`."""
    with mutated_copy(None) as copy:
        where = imported_from(copy)
        if copy not in where.parents:
            raise HarnessError(f"child processes import {PACKAGE} from {where}, not from the mutated copy")
    used = sorted({m.selection for m in mutants})
    print(f"mutation: {len(mutants)} mutants, {len(listed.equivalents)} equivalent (not run); "
          f"baseline of {len(used)} selections first; {jobs} job(s)", flush=True)  # fmt: skip

    def baseline(name: str) -> Result:
        result = run_baseline(name, listed.selections[name], timeout_s)
        print(f"  baseline {result.id:22} {result.status:16} {result.seconds:6.1f}s", flush=True)
        return result

    with ThreadPoolExecutor(jobs) as pool:
        baselines = list(pool.map(baseline, used))
    failed = [b for b in baselines if b.status != "baseline-passed"]
    if failed:
        details = "\n".join(f"{b.id}: {b.killed_by}\n{b.detail[-3000:]}" for b in failed)
        raise HarnessError(f"selections fail without any mutant, so no score can be trusted:\n{details}")

    results: list[Result] = []

    def one(mutant: Mutant) -> Result:
        result = run_mutant(mutant, listed.selections[mutant.selection], timeout_s)
        results.append(result)
        by = f"by {result.killed_by}" if result.killed_by else f"[{mutant.selection}] all passed"
        print(f"  [{len(results):2}/{len(mutants)}] {result.status.upper():8} {mutant.id:32} "
              f"{result.seconds:6.1f}s  {by}", flush=True)  # fmt: skip
        return result

    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(one, mutants))
