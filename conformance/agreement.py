"""Compare what the reference does with what TRL does, and hold TRL's known divergences to account.

An `Outcome` is either a value (compared whole, type included: `torch.bfloat16` is not the string
"bfloat16", `True` is not `1`) or the type of the exception raised. Two outcomes agree when the
values are the same (`same`) or when both reject the input with `ValueError`. Anything else is a
divergence of one of these kinds:

- `trl-accepts`: the reference rejects the input with a ValueError, TRL goes on with it;
- `trl-crashes`: the reference rejects the input with a ValueError, TRL dies with another error;
- `trl-rejects`: TRL rejects an input the reference accepts;
- `values-differ`: both go on, with different values.

`divergences.toml` lists the divergences that are known and explained, each exactly: a
`values-differ` entry names every key that may differ and the value TRL gives there (`differs`),
and may name the reference's (`reference`); every other key must agree. A `trl-crashes` or
`trl-rejects` entry names TRL's exception type (`exception`, and optionally a `message` fragment).
An unlisted divergence fails; so does a listed key that no longer differs, a value other than the
listed one, an exception of another type (the spirit of `xfail(strict=True)`, key by key).

Values in the file are TOML strings, integers, booleans, tables (dicts) and arrays (tuples), plus
these tokens, so that a type is never confused with its spelling:

- `"<absent>"`: the key is not there (the keyword is not passed);
- `"<None>"`: Python's None;
- `"<torch.bfloat16>"` (any `torch.<dtype>`): the torch dtype, where `"bfloat16"` is the string;
- `"<any>"`: any value, as long as it differs; only at level `placement`, where keys are tensor
  names and TRL's device for each depends on transformers' balancing (see the entries' reasons).

A key is a path: nested dict keys joined by "." (`quantization_config.bnb_4bit_quant_storage`);
at level `placement` keys may be fnmatch patterns over tensor names (with `"<any>"` only).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import SpecifierSet

from policyload._toml import tomllib

from .trl_release import TRL

DIVERGENCES_FILE = Path(__file__).with_name("divergences.toml")
KINDS = ("trl-accepts", "trl-crashes", "trl-rejects", "values-differ")
#: The levels where keys are tensor names and "<any>" / patterns are allowed.
PATTERN_LEVELS = ("placement",)


class _Token:
    def __init__(self, spelling: str):
        self.spelling = spelling

    def __repr__(self) -> str:
        return self.spelling


#: A key that is not there: how a keyword that was not passed is spelled in messages and in the file.
ABSENT = _Token("<absent>")
#: "Any value, as long as it differs" (level placement only).
ANY = _Token("<any>")


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
        if reference.error == "ValueError" and trl.error == "ValueError":
            return None
        return "trl-crashes"
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


def _is_pattern(path: str) -> bool:
    return any(character in path for character in "*?[")


def _under(path: str, listed: str) -> bool:
    """Whether the difference at `path` is the listed key's, or inside it."""
    if _is_pattern(listed):
        return fnmatch.fnmatchcase(path, listed)
    return path == listed or path.startswith(listed + ".") or path.startswith(listed + "[")


# --- the divergence file ---------------------------------------------------------------------

_FIELDS = {"level", "cases", "trl", "kind", "reason"}
_OPTIONAL = {"except_cases", "differs", "reference", "exception", "message"}
_TOKENS = {"<absent>": ABSENT, "<None>": None, "<any>": ANY}


def decode(value):
    """A value as the file spells it, as Python has it (see the module docstring)."""
    if isinstance(value, str) and value.startswith("<") and value.endswith(">"):
        if value in _TOKENS:
            return _TOKENS[value]
        match = re.fullmatch(r"<torch\.(\w+)>", value)
        if match:
            import torch

            dtype = getattr(torch, match[1], None)
            if isinstance(dtype, torch.dtype):
                return dtype
        raise ValueError(f"unknown token {value!r}; accepted: {sorted(_TOKENS)} and '<torch.DTYPE>'")
    if isinstance(value, dict):
        return {key: decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(decode(item) for item in value)
    return value


@dataclass(frozen=True)
class Divergence:
    level: str
    cases: tuple[str, ...]
    trl: str
    kind: str
    reason: str
    except_cases: tuple[str, ...] = ()
    #: values-differ: path -> the value TRL gives there (every other key must agree).
    differs: dict = field(default_factory=dict)
    #: values-differ, optional: path -> the value the reference gives there.
    reference: dict = field(default_factory=dict)
    #: trl-crashes / trl-rejects: the type of TRL's exception, and a fragment of its message.
    exception: str | None = None
    message: str | None = None

    def covers(self, level: str, case_id: str, release=TRL) -> bool:
        return (
            self.level == level
            and release in SpecifierSet(self.trl)
            and any(fnmatch.fnmatchcase(case_id, pattern) for pattern in self.cases)
            and not any(fnmatch.fnmatchcase(case_id, pattern) for pattern in self.except_cases)
        )

    @property
    def name(self) -> str:
        return f"{self.level} {self.kind} {list(self.cases)} trl{self.trl}"


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
        if _is_pattern(listed):
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


def load_divergences(path: Path = DIVERGENCES_FILE) -> list[Divergence]:
    """Read and check the divergence file: every entry needs a known kind, a reason and its exact form."""
    entries = tomllib.loads(path.read_text()).get("divergence", [])
    divergences = []
    for number, entry in enumerate(entries, 1):
        where = f"{path.name} entry {number}"
        missing, unknown = _FIELDS - set(entry), set(entry) - _FIELDS - _OPTIONAL
        if missing or unknown:
            raise ValueError(f"{where}: missing {sorted(missing)}, unknown {sorted(unknown)}")
        kind = entry["kind"]
        if kind not in KINDS:
            raise ValueError(f"{where}: kind={kind!r}; accepted: {KINDS}")
        SpecifierSet(entry["trl"])  # a bad specifier fails here, not in the middle of a run
        wants = {"values-differ": {"differs"}, "trl-crashes": {"exception"}, "trl-rejects": {"exception"}}
        allowed = {"values-differ": {"differs", "reference"}, "trl-crashes": {"exception", "message"}}
        allowed["trl-rejects"] = allowed["trl-crashes"]
        given = set(entry) & {"differs", "reference", "exception", "message"}
        if wants.get(kind, set()) - given or given - allowed.get(kind, set()):
            needed, accepted = sorted(wants.get(kind, set())), sorted(allowed.get(kind, set()))
            raise ValueError(f"{where}: kind {kind} needs {needed} and accepts {accepted}; given {sorted(given)}")
        differs, reference = decode(entry.get("differs", {})), decode(entry.get("reference", {}))
        if kind == "values-differ" and not differs:
            raise ValueError(f"{where}: differs is empty; name every key that differs and TRL's value there")
        if set(reference) - set(differs):
            raise ValueError(f"{where}: reference names keys not in differs: {sorted(set(reference) - set(differs))}")
        if entry["level"] not in PATTERN_LEVELS:
            loose = [key for key, value in differs.items() if value is ANY or _is_pattern(key)]
            if loose:
                raise ValueError(f"{where}: '<any>' and key patterns only at level {PATTERN_LEVELS}: {loose}")
        if any(_is_pattern(key) and value is not ANY for key, value in differs.items()):
            raise ValueError(f"{where}: a key pattern takes '<any>' (an exact key names TRL's value)")
        divergences.append(
            Divergence(
                entry["level"],
                tuple(entry["cases"]),
                entry["trl"],
                kind,
                entry["reason"].strip(),
                tuple(entry.get("except_cases", ())),
                differs,
                reference,
                entry.get("exception"),
                entry.get("message"),
            )
        )
    return divergences


DIVERGENCES = load_divergences()


def explain(level: str, case_id: str, reference: Outcome, trl: Outcome, divergences=DIVERGENCES) -> str | None:
    """None when the observation is as expected (agreement, or exactly a listed divergence);
    otherwise a message that reads without knowing how the test works."""
    kind = divergence_kind(reference, trl)
    listed = [d for d in divergences if d.covers(level, case_id)]
    header = f"[{level} {case_id}, trl {TRL}]\n  reference: {reference}\n  TRL:       {trl}"
    if kind is None:
        if not listed:
            return None
        stale = f"listed divergence no longer happens ({listed[0].name}: {listed[0].reason})"
        return f"{header}\n  {stale}; remove it from {DIVERGENCES_FILE.name}"
    of_kind = [d for d in listed if d.kind == kind]
    if not of_kind:
        detail = "".join(
            f"\n    {path}: reference {in_reference!r}, TRL {in_trl!r} [{case_id}]"
            for path, in_reference, in_trl in differences(reference.value, trl.value)
        ) if kind == "values-differ" else ""  # fmt: skip
        unlisted = f"unlisted divergence ({kind}){detail}"
        return f"{header}\n  {unlisted}; fix the reference or explain it in {DIVERGENCES_FILE.name}"
    problems = mismatches(of_kind, reference, trl, case_id)
    if problems:
        names = "; ".join(d.name for d in of_kind)
        lines = "".join(f"\n    {problem}" for problem in problems)
        fix = f"fix the reference or correct {DIVERGENCES_FILE.name}"
        return f"{header}\n  not the listed divergence ({names}):{lines}\n  {fix}"
    return None


def assert_agrees(level: str, case_id: str, reference: Outcome, trl: Outcome) -> None:
    __tracebackhide__ = True
    message = explain(level, case_id, reference, trl)
    if message:
        raise AssertionError(message)
