"""Read `divergences.toml`, the list of TRL's known and explained divergences, and refuse a loose one.

The file is checked whole when the suite is imported, so that a misspelt field or token fails at
once, with the entry's number, and not as a puzzling comparison in the middle of a run. How an
observation is held to these entries is `agreement`'s job; this module only says what an entry is.

Each entry covers a `level`, case id patterns (`cases`, minus `except_cases`), a `trl` version
specifier and a `kind` (see `agreement`), with a `reason`, and states the divergence exactly: a
`values-differ` entry names every key that may differ and the value TRL gives there (`differs`),
and may name the reference's (`reference`); every other key must agree. A `trl-crashes` or
`trl-rejects` entry names TRL's exception type (`exception`, and optionally a `message` fragment).

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

from .implementation import selected
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

_FIELDS = {"level", "cases", "trl", "kind", "reason"}
_OPTIONAL = {"except_cases", "differs", "reference", "exception", "message"}
_TOKENS = {"<absent>": ABSENT, "<None>": None, "<any>": ANY}


def is_pattern(path: str) -> bool:
    """Whether a listed key is an fnmatch pattern (allowed at PATTERN_LEVELS only) rather than one key."""
    return any(character in path for character in "*?[")


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
            loose = [key for key, value in differs.items() if value is ANY or is_pattern(key)]
            if loose:
                raise ValueError(f"{where}: '<any>' and key patterns only at level {PATTERN_LEVELS}: {loose}")
        if any(is_pattern(key) and value is not ANY for key, value in differs.items()):
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


#: The file of the implementation under test (`implementation.selected()`, the reference's by
#: default), loaded at import, so that a malformed file stops the suite before any case runs.
SELECTED_FILE = selected().divergences
DIVERGENCES = load_divergences(SELECTED_FILE)
