"""Running the suite's observing levels in each release's environment, `--jobs` at a time, and
keeping each release's result (status + observations) so that a later run resumes.

A result lives in `<cache>/results/<suite hash>/trl-<release>.json` with the install key it was
made with: it is reused while both match, so a changed suite re-runs every release and a second
run with nothing newly released runs nothing. A release that cannot be installed, imported or
tested is a `Row` whose status says why, never a crashed sweep; such rows are reused too unless
`--retry-failed` (`RAN` tells them apart).
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

from .environments import Environments
from .errors import last_line
from .inputs import LEVEL_FILES, ROOT, install_key, suite_hash
from .row import Row

#: Statuses whose result is reused by a later run (anything else is retried with --retry-failed).
RAN = re.compile(r"^(pass|\d+ failed)")


def junit_counts(path: Path) -> dict:
    """Passed, failed (errors included), skipped and the failing tests' ids, from pytest's JUnit XML:
    the counts survive a run that pytest ends with an error exit."""
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    failures = [
        f"{case.get('classname', '')}::{case.get('name', '')}"
        for case in root.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return {"passed": total - failed - skipped, "failed": failed, "skipped": skipped, "failures": failures}


class Sweeper(Environments):
    """Sweeps releases: a recorded result where one is valid, else install, test and record."""

    def __init__(self, cache: Path, out: Path, python: str, retry_failed: bool = False, timeout: float = 1800):
        self.suite = suite_hash()
        super().__init__(cache, python, timeout)
        self.out, self.retry_failed = out, retry_failed
        self.results = cache / "results" / self.suite
        #: The end of each release's pytest output, kept with a result that did not pass.
        self.log_tails: dict[str, str] = {}

    # -- cached results

    def result_path(self, release: str) -> Path:
        return self.results / f"trl-{release}.json"

    def cached(self, release: str) -> dict | None:
        """The recorded result of `release`, unless its environment's inputs changed since or it
        did not run and failures are retried."""
        path = self.result_path(release)
        if not path.exists():
            return None
        result = json.loads(path.read_text())
        if result.get("install_key") != install_key(release, self.python_version):
            return None
        if self.retry_failed and not RAN.match(result["row"]["status"]):
            return None
        return result

    # -- the suite

    def test(self, release: str, env: Path, row: Row) -> dict | None:
        """Run the levels in `env`; fill the row's counts and status; return the observations."""
        work = self.cache / "work" / self.suite / f"trl-{release}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        observations, junit = work / "observations.json", work / "junit.xml"
        files = sorted({str(p.relative_to(ROOT)) for pat in LEVEL_FILES for p in ROOT.glob(f"conformance/{pat}")})
        command = [
            str(env / "bin" / "python"), "-m", "pytest", *files, "-q", "-p", "no:cacheprovider",
            "--continue-on-collection-errors", f"--observations={observations}", f"--junitxml={junit}",
        ]  # fmt: skip
        test_env = {
            **self.env,
            "PYTHONPATH": str(ROOT / "src"),
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONHASHSEED": "0",
        }
        try:
            result = subprocess.run(
                command, cwd=ROOT, env=test_env, capture_output=True, text=True, timeout=self.timeout
            )
        except subprocess.TimeoutExpired:
            row.status = f"timed out after {self.timeout:.0f} s"
            return None
        (work / "pytest.log").write_text(result.stdout + result.stderr)
        self.log_tails[release] = "\n".join((result.stdout + result.stderr).splitlines()[-60:])
        if junit.exists():
            counts = junit_counts(junit)
            row.passed, row.failed, row.skipped = counts["passed"], counts["failed"], counts["skipped"]
            row.notes += [f"failed: {name}" for name in counts["failures"][:3]]
        if result.returncode not in (0, 1) or not junit.exists():
            row.status = f"pytest exited {result.returncode}: {last_line(result.stdout + result.stderr)}"
        else:
            row.status = "pass" if row.failed == 0 else f"{row.failed} failed"
        if not observations.exists():
            row.status += "; no observations recorded"
            return None
        return json.loads(observations.read_text())["observations"]

    # -- one release, then all of them

    def sweep_release(self, release: str) -> dict:
        """Install and test `release` under its environment's lock; record the result atomically."""
        start = time.monotonic()
        row = Row(release)
        env = self.cache / "envs" / f"trl-{release}"
        env.parent.mkdir(parents=True, exist_ok=True)
        observations = None
        # One sweep at a time per environment (two worktrees may share the cache).
        with open(env.parent / f"trl-{release}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            observations = self.run_release(release, env, row)
        row.seconds = round(time.monotonic() - start, 1)
        key = install_key(release, self.python_version)
        result = {"install_key": key, "row": asdict(row), "observations": observations}
        if not RAN.match(row.status) or row.failed:
            result["log_tail"] = self.log_tails.get(release, "")
        self.results.mkdir(parents=True, exist_ok=True)
        tmp = self.result_path(release).with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1, sort_keys=True, default=str))
        os.replace(tmp, self.result_path(release))
        return result

    def run_release(self, release: str, env: Path, row: Row) -> dict | None:
        observations = None
        try:
            if self.install(release, env, row):
                tested = time.monotonic()
                observations = self.test(release, env, row)
                row.phases["tests"] = round(time.monotonic() - tested, 1)
        except (OSError, subprocess.SubprocessError, ValueError) as error:  # a row, never a crashed sweep
            row.status = f"sweep error: {type(error).__name__}: {last_line(str(error))}"
        return observations

    def sweep(self, releases: list[str], jobs: int, log=None) -> list[dict]:
        """Every release's result, in the order given: recorded ones reused, the rest run `jobs` at a time."""
        log = log or functools.partial(print, flush=True)
        results = {release: self.cached(release) for release in releases}
        todo = [release for release, result in results.items() if result is None]
        recorded = len(releases) - len(todo)
        log(f"sweep: {len(releases)} releases, {recorded} recorded (suite {self.suite}), {len(todo)} to run")
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {pool.submit(self.sweep_release, release): release for release in todo}
            for future in as_completed(futures):
                result = results[futures[future]] = future.result()
                row = result["row"]
                log(f"  trl {row['trl']} (transformers {row['transformers']}): {row['status']} "
                    f"in {row['seconds']:.0f} s [{time.monotonic() - start:.0f} s]")  # fmt: skip
        return [results[release] for release in releases]
