"""Compare what the reference does with what TRL does, and hold TRL's known divergences to account.

An `Outcome` is either a value (compared whole, type included: `torch.bfloat16` is not the string
"bfloat16", `True` is not `1`) or the type of the exception raised. Two outcomes agree when the
values are the same (`same`) or when both raise the same exception type (the reference refuses
bad input with `ValueError`; another implementation may crash exactly as TRL does). Anything else
is a divergence of one of these kinds:

- `trl-accepts`: the reference rejects the input with a ValueError, TRL goes on with it;
- `trl-crashes`: the reference rejects the input with a ValueError, TRL dies with another error
  (for another implementation: both raise, exceptions of different types);
- `trl-rejects`: TRL rejects an input the reference accepts;
- `values-differ`: both go on, with different values.

A divergence passes only when `divergences.toml` lists it exactly (its form, tokens and checks live
in `divergences`): values are compared key path by key path, nested dicts descended into, so an
unlisted divergence fails; so does a listed key that no longer differs, a value other than the
listed one, an exception of another type (the spirit of `xfail(strict=True)`, key by key).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from .divergences import ABSENT, ANY, DIVERGENCES, SELECTED_FILE, Divergence, is_pattern

# Defined here until `divergences` was split off; `X as X` re-exports them for code that imports them from here.
from .divergences import KINDS as KINDS
from .divergences import PATTERN_LEVELS as PATTERN_LEVELS
from .divergences import decode as decode
from .divergences import load_divergences as load_divergences
from .implementation import NotApplicable, record_comparison, selected
from .trl_release import TRL


class Config(dict):
    """A configuration object (e.g. `BitsAndBytesConfig`) as its `to_dict()`, keeping its class:
    never the same as a plain dict with the same items."""

    def __init__(self, class_name: str, items: dict):
        super().__init__(items)
        self.class_name = class_name

    def __repr__(self) -> str:
        return f"{self.class_name}({dict.__repr__(self)})"


def same(a, b) -> bool:
    """Equal and of the same type, all the way down (`1` is not `True`, a dtype is not its name)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Config) and a.class_name != b.class_name:
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


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
        # Both refuse with the same exception type: the same outcome (the reference's refusals
        # are ValueErrors; another implementation may crash exactly as TRL does).
        return None if reference.error == trl.error else "trl-crashes"
    if reference.error:
        return "trl-accepts"
    if trl.error:
        return "trl-rejects"
    return None if same(reference.value, trl.value) else "values-differ"


# --- paths -----------------------------------------------------------------------------------


def _child(path: str, key) -> str:
    if isinstance(key, str) and key and key.replace("_", "a").replace(".", "a").isalnum():
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def differences(reference, trl, path: str = "") -> list[tuple[str, object, object]]:
    """(path, reference's value, TRL's value) of every difference, descending into dicts of one type."""
    if isinstance(reference, dict) and isinstance(trl, dict) and type(reference) is type(trl):
        if not (isinstance(reference, Config) and reference.class_name != trl.class_name):
            found = []
            for key in sorted(set(reference) | set(trl), key=repr):
                found += differences(reference.get(key, ABSENT), trl.get(key, ABSENT), _child(path, key))
            return found
    return [] if same(reference, trl) else [(path, reference, trl)]


def lookup(value, path: str):
    """The value at `path` (dict keys joined by "."; a key may itself hold dots), else ABSENT."""
    if path == "":
        return value
    if not isinstance(value, dict):
        return ABSENT
    for key in value:
        if key == path:
            return value[key]
        if isinstance(key, str) and path.startswith(key + "."):
            found = lookup(value[key], path[len(key) + 1 :])
            if found is not ABSENT:
                return found
    return ABSENT


def _under(path: str, listed: str) -> bool:
    """Whether the difference at `path` is the listed key's, or inside it."""
    if is_pattern(listed):
        return fnmatch.fnmatchcase(path, listed)
    return path == listed or path.startswith(listed + ".") or path.startswith(listed + "[")


# --- held to the listed divergences ---------------------------------------------------------


def mismatches(entries: list[Divergence], reference: Outcome, trl: Outcome, case: str) -> list[str]:
    """How the observation departs from the listed divergences of its kind that cover it (several
    entries may: their keys add up); empty when it is exactly what they list."""
    kind = entries[0].kind
    if kind in ("trl-accepts", "trl-crashes") and reference.error != "ValueError":
        return [f"the reference raises {reference.error}, where it refuses bad input with ValueError [{case}]"]
    problems = []
    if kind in ("trl-crashes", "trl-rejects"):
        for entry in entries:
            if trl.error != entry.exception:
                problems.append(f"TRL raises {trl.error}, listed {entry.exception} [{case}]")
            if entry.message and entry.message not in trl.message:
                problems.append(f"TRL's message {trl.message!r} lacks the listed {entry.message!r} [{case}]")
        return problems
    if kind != "values-differ":
        return []
    differs, listed_reference = {}, {}
    for entry in entries:
        for mine, theirs in ((entry.differs, differs), (entry.reference, listed_reference)):
            for key, value in mine.items():
                if key in theirs and not same(theirs[key], value):
                    problems.append(f"{key}: entries covering [{case}] list both {theirs[key]!r} and {value!r}")
                theirs[key] = value
    found = differences(reference.value, trl.value)
    for path, in_reference, in_trl in found:
        if not any(_under(path, listed) for listed in differs):
            problems.append(f"{path}: reference {in_reference!r}, TRL {in_trl!r} [{case}] (not a listed key)")
    for listed, expected in differs.items():
        if is_pattern(listed):
            if not any(_under(path, listed) for path, _, _ in found):
                problems.append(f"{listed}: no key differs any more [{case}] (listed key no longer differs)")
            continue
        in_reference, in_trl = lookup(reference.value, listed), lookup(trl.value, listed)
        if same(in_reference, in_trl):
            problems.append(f"{listed}: both {in_trl!r} [{case}] (listed key no longer differs)")
            continue
        if expected is not ANY and not same(in_trl, expected):
            problems.append(f"{listed}: TRL {in_trl!r}, listed {expected!r} [{case}] (reference {in_reference!r})")
        if listed in listed_reference and not same(in_reference, listed_reference[listed]):
            problems.append(f"{listed}: reference {in_reference!r}, listed {listed_reference[listed]!r} [{case}]")
    return problems


def explain(level: str, case_id: str, reference: Outcome, trl: Outcome, divergences=DIVERGENCES) -> str | None:
    """None when the observation is as expected (agreement, or exactly a listed divergence);
    otherwise a message that reads without knowing how the test works."""
    kind = divergence_kind(reference, trl)
    listed = [d for d in divergences if d.covers(level, case_id)]
    name = selected().name
    header = f"[{level} {case_id}, trl {TRL}]\n  {name}: {reference}\n  {'TRL:':<{len(name) + 1}} {trl}"
    if kind is None:
        if not listed:
            return None
        stale = f"listed divergence no longer happens ({listed[0].name}: {listed[0].reason})"
        return f"{header}\n  {stale}; remove it from {SELECTED_FILE.name}"
    of_kind = [d for d in listed if d.kind == kind]
    if not of_kind:
        detail = "".join(
            f"\n    {path}: reference {in_reference!r}, TRL {in_trl!r} [{case_id}]"
            for path, in_reference, in_trl in differences(reference.value, trl.value)
        ) if kind == "values-differ" else ""  # fmt: skip
        unlisted = f"unlisted divergence ({kind}){detail}"
        return f"{header}\n  {unlisted}; fix the reference or explain it in {SELECTED_FILE.name}"
    problems = mismatches(of_kind, reference, trl, case_id)
    if problems:
        names = "; ".join(d.name for d in of_kind)
        lines = "".join(f"\n    {problem}" for problem in problems)
        fix = f"fix the reference or correct {SELECTED_FILE.name}"
        return f"{header}\n  not the listed divergence ({names}):{lines}\n  {fix}"
    return None


def first_difference(reference: Outcome, trl: Outcome) -> str | None:
    """The first way the two outcomes differ, one line (None when they agree): the table's cell."""
    kind, name = divergence_kind(reference, trl), selected().name
    if kind is None:
        return None
    if kind == "values-differ":
        path, in_reference, in_trl = differences(reference.value, trl.value)[0]
        return f"{path or 'value'}: {name} {in_reference!r}, TRL {in_trl!r}"
    ours = f"raises {reference.error}" if reference.error else "accepts it"
    return f"{kind}: {name} {ours}, TRL {f'raises {trl.error}: {trl.message}' if trl.error else 'accepts it'}"


def assert_agrees(level: str, case_id: str, reference: Outcome, trl: Outcome, skip_inapplicable=True) -> None:
    """Hold `reference` (the implementation under test's outcome) to TRL's and the listed divergences,
    and record the comparison for the compatibility table. A case the implementation cannot express
    (`NotApplicable`) is skipped, or only left out where `skip_inapplicable` is False (the property test)."""
    __tracebackhide__ = True
    if reference.error == NotApplicable.__name__:
        if skip_inapplicable:
            import pytest

            pytest.skip(f"not expressible in {selected().name}: {reference.message}")
        return
    record_comparison(level, case_id, first_difference(reference, trl))
    message = explain(level, case_id, reference, trl)
    if message:
        raise AssertionError(message)
