"""Compare what the reference does with what TRL does, and hold TRL's known divergences to account.

An `Outcome` is either a value (a dict, compared whole) or the type of the exception raised.
Two outcomes agree when the values are equal or when both reject the input with `ValueError`.
Anything else is a divergence of one of these kinds:

- `trl-accepts`: the reference rejects the input, TRL goes on with it;
- `trl-crashes`: the reference rejects the input with a ValueError, TRL dies with another error;
- `trl-rejects`: TRL rejects an input the reference accepts;
- `values-differ`: both go on, with different values.

`divergences.toml` lists the divergences that are known and explained. An unlisted divergence
fails; so does a listed one that no longer happens (the spirit of `xfail(strict=True)`).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import SpecifierSet

from policyload._toml import tomllib
from policyload.drift import ABSENT

from .trl_release import TRL

DIVERGENCES_FILE = Path(__file__).with_name("divergences.toml")
KINDS = ("trl-accepts", "trl-crashes", "trl-rejects", "values-differ")


@dataclass(frozen=True)
class Outcome:
    value: object = None
    error: str | None = None  # exception class name
    message: str = ""

    def __str__(self) -> str:
        return f"raises {self.error}: {self.message}" if self.error else repr(self.value)


def observe(function, *args, **kwargs) -> Outcome:
    """Run `function` and record what it returned or which exception it raised."""
    try:
        return Outcome(value=function(*args, **kwargs))
    except Exception as error:  # the type is the observation
        return Outcome(error=type(error).__name__, message=str(error).splitlines()[0][:300] if str(error) else "")


def divergence_kind(reference: Outcome, trl: Outcome) -> str | None:
    """None when the two agree, else the kind of divergence."""
    if reference.error and trl.error:
        if reference.error == "ValueError" and trl.error == "ValueError":
            return None
        return "trl-crashes"
    if reference.error:
        return "trl-accepts"
    if trl.error:
        return "trl-rejects"
    return None if reference.value == trl.value else "values-differ"


@dataclass(frozen=True)
class Divergence:
    level: str
    cases: tuple[str, ...]
    trl: str
    kind: str
    reason: str
    except_cases: tuple[str, ...] = ()

    def covers(self, level: str, case_id: str, release=TRL) -> bool:
        return (
            self.level == level
            and release in SpecifierSet(self.trl)
            and any(fnmatch.fnmatchcase(case_id, pattern) for pattern in self.cases)
            and not any(fnmatch.fnmatchcase(case_id, pattern) for pattern in self.except_cases)
        )


def load_divergences(path: Path = DIVERGENCES_FILE) -> list[Divergence]:
    """Read and check the divergence file: every entry needs a known kind and a reason."""
    entries = tomllib.loads(path.read_text()).get("divergence", [])
    divergences = []
    for number, entry in enumerate(entries, 1):
        missing = {"level", "cases", "trl", "kind", "reason"} - set(entry)
        unknown = set(entry) - {"level", "cases", "trl", "kind", "reason", "except_cases"}
        if missing or unknown:
            raise ValueError(f"{path.name} entry {number}: missing {sorted(missing)}, unknown {sorted(unknown)}")
        if entry["kind"] not in KINDS:
            raise ValueError(f"{path.name} entry {number}: kind={entry['kind']!r}; accepted: {KINDS}")
        SpecifierSet(entry["trl"])  # a bad specifier fails here, not in the middle of a run
        divergences.append(
            Divergence(
                entry["level"],
                tuple(entry["cases"]),
                entry["trl"],
                entry["kind"],
                entry["reason"].strip(),
                tuple(entry.get("except_cases", ())),
            )
        )
    return divergences


DIVERGENCES = load_divergences()


def explain(level: str, case_id: str, reference: Outcome, trl: Outcome, divergences=DIVERGENCES) -> str | None:
    """None when the observation is as expected (agreement, or a listed divergence of the same
    kind); otherwise a message that reads without knowing how the test works."""
    kind = divergence_kind(reference, trl)
    listed = [d for d in divergences if d.covers(level, case_id)]
    header = f"[{level} {case_id}, trl {TRL}]\n  reference: {reference}\n  TRL:       {trl}"
    if kind is None and listed:
        stale = f"listed divergence no longer happens ({listed[0].kind}: {listed[0].reason})"
        return f"{header}\n  {stale}; remove it from {DIVERGENCES_FILE.name}"
    if kind is not None and not any(d.kind == kind for d in listed):
        detail = difference(reference.value, trl.value) if kind == "values-differ" else ""
        unlisted = f"unlisted divergence ({kind}){detail}"
        return f"{header}\n  {unlisted}; fix the reference or explain it in {DIVERGENCES_FILE.name}"
    return None


def difference(reference, trl) -> str:
    """Key-by-key difference of two dicts (one level of nesting), for failure messages."""
    if not (isinstance(reference, dict) and isinstance(trl, dict)):
        return ""
    lines = []
    for key in sorted(set(reference) | set(trl)):
        in_reference, in_trl = reference.get(key, ABSENT), trl.get(key, ABSENT)
        if in_reference != in_trl:
            lines.append(f"\n    {key}: reference {in_reference!r}, TRL {in_trl!r}")
    return "".join(lines)


def assert_agrees(level: str, case_id: str, reference: Outcome, trl: Outcome) -> None:
    __tracebackhide__ = True
    message = explain(level, case_id, reference, trl)
    if message:
        raise AssertionError(message)
