"""Sweep every final TRL release since 0.23: one environment per release, the conformance levels
that observe TRL (quantization, device map, recipe, release facts, and the reference-model plan
where the suite has one), the observations recorded as the matrix records them, and a drift
report that names the exact release of every change.

    python -m policyload.sweep                 # or: tox -e sweep
    python -m policyload.sweep --releases 0.26.2 0.27.0

Each release gets a virtualenv made by uv (a shared uv cache: creating 20+ environments is a
matter of hard links) with that release of TRL, the newest transformers it works with (its own
`Requires-Dist`, capped by `KNOWN_BREAKS`, then stepped down while `import trl.scripts.dpo`
fails) and the project's pins (constraints/base.txt, constraints/torch-cpu.txt). The project
itself is not installed: the suite runs from this tree with `PYTHONPATH=src`.

Resumable: environments live in `<cache>/envs/` and are reused while their install inputs are
unchanged; a release's result (status + observations) lives in `<cache>/results/<suite hash>/`
and is reused while the suite is unchanged. The suite hash covers what decides an outcome: the
conformance suite, its fixtures, policyload's own source (the reference side) and the pins. So
a changed suite re-runs every release, and a second run with nothing newly released only lists
the index and rewrites the report. Releases run `--jobs` at a time (2: this machine's cores).

A release that cannot be installed or imported is a row that says why, never a gap. Output
(`--out`, default out/sweep): observations/trl-<release>.json (input of `python -m
policyload.drift --by-release`), releases.json (one row per release), report.md.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from . import drift

ROOT = Path(__file__).resolve().parents[2]
#: The oldest release swept: the first with `ModelConfig.dtype` (the suite describes 0.22 onwards).
SINCE = "0.23"
#: The test modules that observe TRL's behaviour, not transformers' (loading, placement and the
#: distributed run are left to the matrix: slow, and about transformers and the hardware).
#: Patterns: a level the suite does not have (yet) is simply not run.
LEVEL_FILES = (
    "test_quantization.py",
    "test_device_map.py",
    "test_recipe.py",
    "test_release_facts.py",
    "test_reference*.py",
)
#: What every environment gets besides TRL and transformers (`pyproject.toml`'s test extra,
#: policyload's own dependencies); the versions come from the constraint files.
PACKAGES = ("torch", "accelerate", "bitsandbytes", "datasets", "pytest", "hypothesis", "psutil", "packaging")
CONSTRAINTS = ("constraints/base.txt", "constraints/torch-cpu.txt")


@dataclass(frozen=True)
class Break:
    """A transformers release range that breaks a TRL release range although TRL's own
    requirements allow it (TRL caps transformers only loosely)."""

    trl: str
    transformers: str
    reason: str


KNOWN_BREAKS = (
    Break(
        ">=0.23,<0.29",
        "<5.3",
        "transformers >= 5.3: `import trl.scripts.dpo` fails (`_is_package_available` returns a tuple there)",
    ),
)
#: Step transformers down at most this many minor releases when `import trl.scripts.dpo` fails.
MAX_FALLBACKS = 4
#: Packages whose bytecode each environment writes for itself (see `Sweeper.precompile`): one
#: version per environment, so compiling all of it would not pay.
LAZY = {"trl"}
#: Statuses whose result is reused by a later run (anything else is retried with --retry-failed).
RAN = re.compile(r"^(pass|\d+ failed)")


# --- which releases ---------------------------------------------------------------------------


def final_releases(versions: Iterable[str], since: str = SINCE) -> list[str]:
    """The final releases (no pre-, dev- or post-release) at or above `since`, oldest first."""
    kept = []
    for text in versions:
        try:
            version = Version(text)
        except InvalidVersion:
            continue
        if not (version.is_prerelease or version.is_devrelease or version.is_postrelease) and version >= Version(since):
            kept.append(version)
    return [str(version) for version in sorted(set(kept))]


def index_versions(package: str = "trl") -> list[str]:
    """Every version of `package` on the index pip is configured with (`pip index versions`)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", package, "--pre"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    match = re.search(r"^Available versions: (.*)$", result.stdout, flags=re.MULTILINE)
    if result.returncode or not match:
        raise SweepError(f"pip index versions {package} failed: {(result.stderr or result.stdout).strip()[-500:]}")
    return [version.strip() for version in match.group(1).split(",")]


class SweepError(Exception):
    """The sweep cannot start; `main()` prints it as `error: ...` and exits 2."""


# --- what invalidates what ----------------------------------------------------------------------


def digest(paths: Iterable[Path], *extra: str, root: Path = ROOT) -> str:
    hasher = hashlib.sha256()
    for text in extra:
        hasher.update(text.encode())
    for path in sorted(paths):
        hasher.update(str(path.relative_to(root)).encode())
        hasher.update(path.read_bytes())
    return hasher.hexdigest()[:12]


def suite_hash(root: Path = ROOT) -> str:
    """What decides a release's outcome besides TRL and transformers: the suite (conformance/:
    tests, divergences, release facts), its fixtures, the reference (src/policyload, the sweep and
    the drift report excepted: they only read results) and the pins."""
    files = [
        *root.glob("conformance/*.py"),
        *root.glob("conformance/*.toml"),
        *root.glob("fixtures/*.py"),
        root / "conftest.py",
        *(p for p in root.glob("src/policyload/**/*.py") if p.name not in ("sweep.py", "drift.py")),
        *(root / name for name in CONSTRAINTS),
    ]
    return digest((p for p in files if p.is_file()), json.dumps(LEVEL_FILES), root=root)


def known_breaks(release: str) -> list[Break]:
    return [b for b in KNOWN_BREAKS if Version(release) in SpecifierSet(b.trl)]


def install_key(release: str, python: str) -> str:
    """What decides an environment's contents: the release, its known breaks, the pins, Python."""
    breaks = [asdict(b) for b in known_breaks(release)]
    return digest((ROOT / name for name in CONSTRAINTS), release, python, json.dumps([PACKAGES, breaks]))


# --- one release ------------------------------------------------------------------------------


@dataclass
class Row:
    trl: str
    status: str = "not run"
    transformers: str | None = None
    #: TRL's own requirement on transformers (its wheel's Requires-Dist).
    requires: str | None = None
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    #: Seconds per phase: install (uv, bytecode), import (the probe), tests.
    phases: dict = field(default_factory=dict)
    #: Caps and fallbacks applied to transformers, and the first failing tests.
    notes: list[str] = field(default_factory=list)


def uv_command() -> list[str]:
    """uv next to this Python (a venv or tox env with uv installed), on PATH, or `python -m uv`."""
    beside = Path(sys.executable).with_name("uv")
    if beside.exists():
        return [str(beside)]
    if shutil.which("uv"):
        return [shutil.which("uv")]
    try:
        import uv  # noqa: F401
    except ImportError as error:
        raise SweepError("the sweep needs uv: `pip install uv` (tox -e sweep installs it)") from error
    return [sys.executable, "-m", "uv"]


def index_options() -> list[str]:
    """pip's index settings (find-links, extra index, e.g. PyTorch's CPU index) spelled for uv; the
    best match over all indexes wins, as with pip, so torch==2.13.0 installs as 2.13.0+cpu."""
    options = ["--index-strategy", "unsafe-best-match"]
    for link in os.environ.get("PIP_FIND_LINKS", "").split():
        options += ["--find-links", link]
    for url in os.environ.get("PIP_EXTRA_INDEX_URL", "").split():
        options += ["--extra-index-url", url]
    return options


def interpreter_version(python: str) -> str:
    found = subprocess.run([python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True)
    if found.returncode:
        raise SweepError(f"--python {python}: {last_line(found.stderr)}")
    return found.stdout.strip()


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


class Sweeper:
    def __init__(self, cache: Path, out: Path, python: str, retry_failed: bool = False, timeout: float = 1800):
        self.cache, self.out, self.python = cache, out, python
        self.retry_failed, self.timeout = retry_failed, timeout
        self.suite = suite_hash()
        # Environments are keyed by the interpreter's version, not its path (a tox env or a venv
        # of the same Python makes the same environments).
        self.python_version = sys.version if python == sys.executable else interpreter_version(python)
        self.results = cache / "results" / self.suite
        self.env = {**os.environ, "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(cache / "uv"))}
        self.env.pop("VIRTUAL_ENV", None)
        # Each environment writes the bytecode of what it imports (a fresh env has none: uv does
        # not compile), so the suite does not recompile torch and transformers on every start.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.compiling = threading.Lock()
        #: The end of each release's pytest output, kept with a result that did not pass.
        self.log_tails: dict[str, str] = {}
        self.env.pop("PIP_CONSTRAINT", None)  # tox sets it to constraints.txt, the newest TRL

    # -- cached results

    def result_path(self, release: str) -> Path:
        return self.results / f"trl-{release}.json"

    def cached(self, release: str) -> dict | None:
        path = self.result_path(release)
        if not path.exists():
            return None
        result = json.loads(path.read_text())
        if result.get("install_key") != install_key(release, self.python_version):
            return None
        if self.retry_failed and not RAN.match(result["row"]["status"]):
            return None
        return result

    # -- environments

    @property
    def uv(self) -> list[str]:
        return uv_command()

    def run(self, command: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, **{"env": self.env, **kwargs})

    def install(self, release: str, env: Path, row: Row) -> bool:
        """Make `env` hold `release` with the newest transformers it imports with; False (and the
        row's status says why) when it cannot."""
        key = install_key(release, self.python_version)
        marker = env / "policyload-sweep.json"
        if marker.exists():
            recorded = json.loads(marker.read_text())
            if recorded.get("install_key") == key:
                row.transformers, row.requires = recorded["transformers"], recorded["requires"]
                row.notes += recorded["notes"]
                return True
        shutil.rmtree(env, ignore_errors=True)
        made = self.run([*self.uv, "venv", "--quiet", "--python", self.python, str(env)])
        if made.returncode:
            row.status = f"install failed: uv venv: {last_line(made.stderr)}"
            return False
        python = str(env / "bin" / "python")
        breaks = known_breaks(release)
        caps = [b.transformers for b in breaks]
        row.notes += [f"transformers{b.transformers}: {b.reason}" for b in breaks]
        reason = None  # why the last transformers tried did not import
        for _ in range(MAX_FALLBACKS + 1):
            started = time.monotonic()
            requirement = "transformers" + (",".join(caps) if caps else "")
            constraints = [option for name in CONSTRAINTS for option in ("-c", str(ROOT / name))]
            installed = self.run(
                [*self.uv, "pip", "install", "--quiet", "--python", python, *index_options(), *constraints,
                 f"trl=={release}", requirement, *PACKAGES],
                timeout=self.timeout,
            )  # fmt: skip
            if installed.returncode:
                failure = last_line(installed.stderr)
                row.status = f"import failed: {reason}; no older transformers installs ({failure})" if reason else (
                    f"install failed: {failure}"
                )
                return False
            self.precompile()
            row.phases["install"] = round(row.phases.get("install", 0) + time.monotonic() - started, 1)
            started = time.monotonic()
            probe = self.run(
                [python, "-c", PROBE], timeout=600, env={**self.env, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"}
            )
            row.phases["import"] = round(row.phases.get("import", 0) + time.monotonic() - started, 1)
            if probe.returncode == 0:
                facts = json.loads(probe.stdout.strip().splitlines()[-1])
                row.transformers, row.requires = facts["transformers"], facts["requires"]
                marker.write_text(json.dumps({"install_key": key, **facts, "notes": row.notes}, indent=1))
                return True
            version = self.run([python, "-c", "from importlib.metadata import version; print(version('transformers'))"])
            reason = last_line(probe.stderr)
            if version.returncode:
                row.status = f"import failed: {reason}"
                return False
            current = Version(version.stdout.strip())
            cap = f"<{current.major}.{current.minor}" if current.minor else f"<{current.major}"
            row.notes.append(f"transformers {current}: `import trl.scripts.dpo` failed ({reason}); retried with {cap}")
            caps.append(cap)
        row.status = f"import failed: {reason} (after {MAX_FALLBACKS} transformers fallbacks)"
        return False

    def precompile(self) -> None:
        """Compile the wheels uv has unpacked into its cache, once: uv hard-links an environment's
        files from there, `__pycache__` included, so every later environment starts with the
        bytecode of torch, transformers & co. (the same source file, so the same mtime and
        size, so valid). TRL, one version per environment, is left to each environment."""
        archives = Path(self.env["UV_CACHE_DIR"]) / "archive-v0"
        done_file = self.cache / "compiled.json"
        with self.compiling:
            done = set(json.loads(done_file.read_text())) if done_file.exists() else set()
            new = [
                folder for folder in sorted(archives.glob("*"))
                if folder.is_dir() and folder.name not in done and not LAZY & {p.name for p in folder.iterdir()}
            ]  # fmt: skip
            if new:
                self.run([self.python, "-m", "compileall", "-q", "-j", "2", *map(str, new)], timeout=self.timeout)
                done_file.write_text(json.dumps(sorted(done | {folder.name for folder in new})))

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

    def sweep_release(self, release: str) -> dict:
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


#: Run in each environment: does the recipe import, and with what.
PROBE = """
import json, importlib.metadata as m
import trl.scripts.dpo
requires = [r for r in (m.requires("trl") or []) if r.split(";")[0].strip().lower().startswith("transformers")]
print(json.dumps({"transformers": m.version("transformers"), "requires": "; ".join(requires) or None}))
"""


def junit_counts(path: Path) -> dict:
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


# --- output -----------------------------------------------------------------------------------


def with_skipped(results: list[dict], index: list[str], sweeper: Sweeper) -> list[dict]:
    """`results` and a row for every final release between them that this run left out
    (`--releases`): its recorded result if there is one, else "not swept", so the drift report
    never attributes a change across releases it did not look at to the later one."""
    if not results:
        return results
    swept = {result["row"]["trl"]: result for result in results}
    oldest, newest = min(map(Version, swept)), max(map(Version, swept))
    between = [release for release in index if oldest <= Version(release) <= newest and release not in swept]
    for release in between:
        swept[release] = sweeper.cached(release) or {"row": asdict(Row(release, "not swept")), "observations": None}
    return sorted(swept.values(), key=lambda result: Version(result["row"]["trl"]))


def status_table(rows: list[dict]) -> str:
    """Consecutive releases with the same transformers and status share a line."""
    groups: list[list[dict]] = []
    for row in rows:
        last = groups[-1][-1] if groups else None
        if last and (last["transformers"], last["status"]) == (row["transformers"], row["status"]):
            groups[-1].append(row)
        else:
            groups.append([row])
    lines = ["| TRL | transformers | status |", "|---|---|---|"]
    for group in groups:
        releases = ", ".join(row["trl"] for row in group)
        lines.append(f"| {releases} | {group[0]['transformers'] or '-'} | {group[0]['status']} |")
    return "\n".join(lines)


def runs_of(results: list[dict]) -> tuple[list[dict], list[str]]:
    """The drift report's input (releases with observations) and the releases without them."""
    runs = [
        {"trl": r["row"]["trl"], "transformers": r["row"]["transformers"], "observations": r["observations"]}
        for r in results
        if r["observations"]
    ]
    return runs, [r["row"]["trl"] for r in results if not r["observations"]]


def history(results: list[dict]) -> str:
    """The README's block: which releases were swept, and every change at the release it appears in."""
    runs, unobserved = runs_of(results)
    rows = [result["row"] for result in results]
    return (
        f"TRL {rows[0]['trl']} to {rows[-1]['trl']}: {len(rows)} final releases, {len(runs)} observed "
        f"(`python -m policyload.sweep`).\n\n{status_table(rows)}\n\n"
        f"{drift.by_release_table(runs, unobserved)}\n"
    )


def write_outputs(results: list[dict], out: Path) -> str:
    (out / "observations").mkdir(parents=True, exist_ok=True)
    for stale in (out / "observations").glob("trl-*.json"):
        stale.unlink()
    runs, _ = runs_of(results)
    for run in runs:
        (out / "observations" / f"trl-{run['trl']}.json").write_text(json.dumps(run, indent=1, sort_keys=True))
    (out / "releases.json").write_text(json.dumps([r["row"] for r in results], indent=1))
    shutil.rmtree(out / "logs", ignore_errors=True)
    for result in results:
        if result.get("log_tail"):
            (out / "logs").mkdir(exist_ok=True)
            (out / "logs" / f"trl-{result['row']['trl']}.txt").write_text(result["log_tail"] + "\n")
    report = f"# TRL release sweep\n\n{history(results)}"
    (out / "report.md").write_text(report)
    return report


def save_record(results: list[dict], folder: Path) -> None:
    """The committed copy (gzip without timestamps, so identical data is identical bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.json.gz"):
        stale.unlink()
    for result in results:
        # Timings left out: a re-run that observed the same rewrites the same bytes.
        row = {key: value for key, value in result["row"].items() if key not in ("seconds", "phases")}
        data = {"row": row, "observations": result["observations"]}
        text = json.dumps(data, indent=0, sort_keys=True).encode()
        (folder / f"trl-{result['row']['trl']}.json.gz").write_bytes(gzip.compress(text, mtime=0))


def load_record(folder: Path) -> list[dict]:
    results = [json.loads(gzip.decompress(path.read_bytes())) for path in folder.glob("*.json.gz")]
    return sorted(results, key=lambda result: Version(result["row"]["trl"]))


#: The committed sweep, and the README block generated from it.
RECORD = ROOT / "conformance" / "sweep"
README = ROOT / "README.md"
BEGIN, END = "<!-- sweep:begin (python -m policyload.sweep --readme) -->", "<!-- sweep:end -->"


def readme_with(history_text: str, readme: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise SweepError(f"README.md has no {BEGIN} ... {END} block")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{history_text}{END}{tail}"


# --- command line -----------------------------------------------------------------------------


def default_cache() -> Path:
    return Path(os.environ.get("POLICYLOAD_SWEEP_CACHE", Path.home() / ".cache" / "policyload" / "sweep"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m policyload.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--releases", nargs="+", help=f"these releases only (default: every final one since {SINCE})")
    parser.add_argument("--since", default=SINCE, help="oldest release swept (default %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="releases at a time (default %(default)s)")
    parser.add_argument(
        "--cache", type=Path, default=default_cache(), help="envs and results ($POLICYLOAD_SWEEP_CACHE)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "sweep", help="report folder (default out/sweep)")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the environments")
    parser.add_argument("--retry-failed", action="store_true", help="re-run releases that did not install or import")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per install / test run")
    parser.add_argument("--record", action="store_true", help=f"also write the results to {RECORD.relative_to(ROOT)}/")
    parser.add_argument(
        "--readme", action="store_true", help="only rewrite README.md's history block from the committed record"
    )
    args = parser.parse_args(argv)
    try:
        if args.readme:
            README.write_text(readme_with(history(load_record(RECORD)), README.read_text()))
            return 0
        start = time.monotonic()
        try:
            index = final_releases(index_versions("trl"), args.since)
        except SweepError as error:
            if not args.releases:
                raise
            print(f"warning: {error}; releases between those given are not listed", file=sys.stderr)
            index = []
        releases = final_releases(args.releases, "0") if args.releases else index
        sweeper = Sweeper(args.cache, args.out, args.python, args.retry_failed, args.timeout)
        results = with_skipped(sweeper.sweep(releases, args.jobs), index, sweeper)
        print(write_outputs(results, args.out))
        if args.record:
            save_record(results, RECORD)
        print(f"sweep: {len(releases)} releases in {time.monotonic() - start:.0f} s; report in {args.out}/report.md")
    except (SweepError, drift.DriftError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
