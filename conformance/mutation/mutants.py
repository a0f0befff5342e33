"""The mutant list and its application: read `mutants.toml`, check it, and plant one fault in a
temporary copy of `src/`.

The list is checked before anything runs, because a score is only as good as the list: unknown
or missing fields, duplicate ids, a selection that is not defined, and a `new` that changes
nothing are refused (`HarnessError`, exit 2). Every `old` snippet must occur exactly once in its
file, so the list cannot rot silently when the reference changes. Equivalent mutants (faults no
test can see, because the program behaves the same) are listed under `[[equivalent]]` with the
reason; their snippets are checked the same way, they are not run.

A mutant is applied to a copy, never to the working tree, so a crash cannot leave a mutated file
behind.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from policyload._toml import tomllib

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOT = REPO_ROOT / "src"
PACKAGE = "policyload"
MUTANTS_FILE = Path(__file__).with_name("mutants.toml")


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
