"""Mutation testing of the reference: plant a fault in `policyload`, run the tests that can reach
it, and see them fail.

The mutants are a curated list of semantic faults (`mutants.toml`), each one a mistake a person
could make in the reference: an exact `old` snippet of a file of `src/policyload`, its `new`
replacement, a one-line description, and the named test selection that must kill it. A generic
tool (mutmut, cosmic-ray) would mutate every operator of every module and run far more than the
20 minutes this machine allows with a 1140-test suite; a curated list covers every public function
with faults that mean something, in minutes.

How a mutant runs: `src/` is copied to a temporary folder, the snippet is replaced there (never
in the working tree, so a crash cannot leave a mutated file behind), and pytest runs the
mutant's selection in a child process with that copy first on `PYTHONPATH`, stopping at the
first failure (`-x`). The mutant is killed when a test fails (or collection breaks, or the run
times out), and survives when every selected test passes.

Before any mutant, each selection used runs once against an unmutated copy: it must pass, or
the harness is broken (exit 2). A mutant whose `old` snippet does not occur exactly once in its
file is an error too (exit 2), so the list cannot rot silently when the reference changes.
Equivalent mutants (faults no test can see, because the program behaves the same) are listed
in `mutants.toml` under `[[equivalent]]` with the reason; their snippets are checked, they are
not run.

    python -m conformance.mutation            # everything: baselines, then every mutant
    python -m conformance.mutation --list     # the mutants and their selections
    python -m conformance.mutation --only ID [ID ...] [--jobs 2] [--json out/mutation.json]

Exit status: 0 every mutant killed, 1 a mutant survived, 2 a harness error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from policyload._toml import tomllib

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOT = REPO_ROOT / "src"
PACKAGE = "policyload"
MUTANTS_FILE = Path(__file__).with_name("mutants.toml")
#: Every child pytest run: stop at the first failure, touch no cache, say which test failed.
PYTEST_OPTIONS = ("-x", "-q", "-p", "no:cacheprovider", "-rfE", "--no-header")
#: Wall-clock limit of one child run, seconds; a mutant that hangs past it counts as killed.
DEFAULT_TIMEOUT_S = 600
#: Which test failed, from pytest's short summary (`-rfE`).
_FAILED = re.compile(r"^(FAILED|ERROR) (.+?)(?: - .*)?$")


class HarnessError(Exception):
    """The harness cannot give a trustworthy score: a stale snippet, a bad list, a failing baseline."""


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str  # relative to src/policyload
    old: str
    new: str
    description: str
    target: str  # the public function (or method) the fault is in
    selection: str  # a name of [selection.*]


@dataclass(frozen=True)
class Equivalent:
    id: str
    file: str
    old: str
    new: str
    reason: str
    target: str


@dataclass(frozen=True)
class MutantList:
    selections: dict[str, tuple[str, ...]]
    mutants: tuple[Mutant, ...]
    equivalents: tuple[Equivalent, ...] = ()


@dataclass
class Result:
    id: str
    status: str  # "killed", "survived", "baseline-passed", "baseline-failed"
    seconds: float
    killed_by: str | None = None
    detail: str = field(default="", repr=False)


def _fields(kind: str, entry: dict, required: set, number: int, path: Path) -> None:
    missing, unknown = required - set(entry), set(entry) - required
    if missing or unknown:
        raise HarnessError(f"{path.name} {kind} {number}: missing {sorted(missing)}, unknown {sorted(unknown)}")


def load_mutants(path: Path = MUTANTS_FILE) -> MutantList:
    """Read and check the list: known fields, unique ids, named selections, a real change."""
    data = tomllib.loads(path.read_text())
    selections = {}
    for name, selection in data.get("selection", {}).items():
        args = selection.get("args")
        if not args or not all(isinstance(arg, str) for arg in args):
            raise HarnessError(f"{path.name} selection {name!r}: `args` must be a non-empty list of strings")
        selections[name] = tuple(args)
    mutants, equivalents = [], []
    for number, entry in enumerate(data.get("mutant", []), 1):
        _fields("mutant", entry, {"id", "file", "old", "new", "description", "target", "selection"}, number, path)
        if entry["selection"] not in selections:
            raise HarnessError(f"{path.name} mutant {entry['id']!r}: unknown selection {entry['selection']!r}")
        mutants.append(Mutant(**entry))
    for number, entry in enumerate(data.get("equivalent", []), 1):
        _fields("equivalent", entry, {"id", "file", "old", "new", "reason", "target"}, number, path)
        equivalents.append(Equivalent(**entry))
    ids = [m.id for m in mutants] + [e.id for e in equivalents]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise HarnessError(f"{path.name}: duplicate ids {duplicates}")
    for mutant in [*mutants, *equivalents]:
        if mutant.old == mutant.new:
            raise HarnessError(f"{path.name} {mutant.id!r}: `new` is the same as `old`")
    return MutantList(selections, tuple(mutants), tuple(equivalents))


def check_snippet(mutant: Mutant | Equivalent, source_root: Path = SOURCE_ROOT) -> str:
    """The file's text; raises `HarnessError` unless `mutant.old` occurs in it exactly once."""
    path = source_root / PACKAGE / mutant.file
    if not path.is_file():
        raise HarnessError(f"mutant {mutant.id!r}: no file {path}")
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        where = "does not occur" if count == 0 else f"occurs {count} times"
        raise HarnessError(
            f"mutant {mutant.id!r}: its `old` snippet {where} in {PACKAGE}/{mutant.file}; "
            f"update {MUTANTS_FILE.name} to the current source:\n{mutant.old}"
        )
    return text


@contextmanager
def mutated_copy(mutant: Mutant | None, source_root: Path = SOURCE_ROOT):
    """A temporary copy of `source_root` with `mutant` applied (None: unmutated); yields its path,
    to put first on PYTHONPATH. The copy is removed afterwards; `source_root` is never written."""
    text = check_snippet(mutant, source_root) if mutant is not None else None
    folder = Path(tempfile.mkdtemp(prefix="policyload-mutant-"))
    try:
        copy = folder / "src"
        shutil.copytree(source_root, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        if mutant is not None:
            (copy / PACKAGE / mutant.file).write_text(text.replace(mutant.old, mutant.new, 1))
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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


def describe_selection(args: tuple[str, ...]) -> str:
    return " ".join(f"'{arg}'" if " " in arg else arg for arg in args)


def _parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m conformance.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=Path, default=MUTANTS_FILE, help="the mutant list (TOML)")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these mutants only")
    parser.add_argument("--jobs", type=int, default=1, choices=(1, 2), help="child pytest runs at once (default 1)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per child run")
    parser.add_argument("--list", action="store_true", help="print the mutants and their selections, run nothing")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    options = _parse(argv)
    started = time.monotonic()
    try:
        listed = load_mutants(options.mutants)
        for mutant in [*listed.mutants, *listed.equivalents]:
            check_snippet(mutant)
        mutants = list(listed.mutants)
        if options.only:
            unknown = sorted(set(options.only) - {m.id for m in mutants})
            if unknown:
                raise HarnessError(f"--only: unknown mutant ids {unknown}")
            mutants = [m for m in mutants if m.id in options.only]
        if options.list:
            for mutant in mutants:
                print(f"{mutant.id:32} {mutant.target:28} [{mutant.selection}] {mutant.description}")
            for equivalent in listed.equivalents:
                print(f"{equivalent.id:32} {equivalent.target:28} EQUIVALENT: {equivalent.reason}")
            return 0
        return _run(options, listed, mutants, started)
    except HarnessError as error:
        print(f"mutation: harness error: {error}", file=sys.stderr)
        return 2


def _run(options, listed: MutantList, mutants: list[Mutant], started: float) -> int:
    with mutated_copy(None) as copy:
        where = imported_from(copy)
        if copy not in where.parents:
            raise HarnessError(f"child processes import {PACKAGE} from {where}, not from the mutated copy")
    used = sorted({m.selection for m in mutants})
    print(f"mutation: {len(mutants)} mutants, {len(listed.equivalents)} equivalent (not run); "
          f"baseline of {len(used)} selections first; {options.jobs} job(s)", flush=True)  # fmt: skip

    def baseline(name: str) -> Result:
        result = run_baseline(name, listed.selections[name], options.timeout)
        print(f"  baseline {result.id:22} {result.status:16} {result.seconds:6.1f}s", flush=True)
        return result

    with ThreadPoolExecutor(options.jobs) as pool:
        baselines = list(pool.map(baseline, used))
    failed = [b for b in baselines if b.status != "baseline-passed"]
    if failed:
        details = "\n".join(f"{b.id}: {b.killed_by}\n{b.detail[-3000:]}" for b in failed)
        raise HarnessError(f"selections fail without any mutant, so no score can be trusted:\n{details}")

    results: list[Result] = []

    def one(mutant: Mutant) -> Result:
        result = run_mutant(mutant, listed.selections[mutant.selection], options.timeout)
        results.append(result)
        by = f"by {result.killed_by}" if result.killed_by else f"[{mutant.selection}] all passed"
        print(f"  [{len(results):2}/{len(mutants)}] {result.status.upper():8} {mutant.id:32} "
              f"{result.seconds:6.1f}s  {by}", flush=True)  # fmt: skip
        return result

    with ThreadPoolExecutor(options.jobs) as pool:
        ordered = list(pool.map(one, mutants))
    elapsed = time.monotonic() - started
    by_id = {m.id: m for m in mutants}
    survivors = [r for r in ordered if r.status == "survived"]
    killed = len(ordered) - len(survivors)
    score = f"{killed}/{len(ordered)}"
    print(f"\nmutation score: {score} killed ({100 * killed / max(len(ordered), 1):.0f}%), "
          f"{len(listed.equivalents)} equivalent mutants listed, in {elapsed:.0f}s", flush=True)  # fmt: skip
    if survivors:
        print(f"survivors ({len(survivors)}):")
        for result in survivors:
            mutant = by_id[result.id]
            print(f"  {mutant.id}: {mutant.description}\n"
                  f"      {mutant.file}, {mutant.target}; selection [{mutant.selection}]: "
                  f"{describe_selection(listed.selections[mutant.selection])}")  # fmt: skip
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "score": score,
            "seconds": round(elapsed, 1),
            "results": [
                {"id": r.id, "status": r.status, "seconds": round(r.seconds, 1), "killed_by": r.killed_by,
                 "selection": by_id[r.id].selection, "description": by_id[r.id].description}
                for r in ordered
            ],
            "equivalent": [{"id": e.id, "reason": e.reason} for e in listed.equivalents],
        }  # fmt: skip
        options.json.write_text(json.dumps(record, indent=1))
    return 1 if survivors else 0
