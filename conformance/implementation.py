"""The implementation under test: a parameter of the suite, the reference by default.

Other frameworks re-implement TRL's policy-loading contract (alignment-handbook, LlamaFactory, ...)
and their users assume it behaves like TRL. The levels compare *an implementation* with TRL's own
code, so any of them can be checked with the same cases, as array-api-tests does for array
libraries (`ARRAY_API_TESTS_MODULE`). Choose it with `POLICYLOAD_IMPLEMENTATION` or pytest's
`--implementation`: a built-in name (`BUILTIN`) or `module:object` naming an `Implementation`.

The adapter protocol is `Implementation`: one optional callable per level, each given the case as
TRL's `ModelConfig` fields (`LoadSpec` names, invalid values included, so that the implementation's
own handling of bad input is what is observed):

- `quantization_config(fields)`: the 4/8-bit config, a `BitsAndBytesConfig`, its `to_dict()`, or None;
- `device_map(topology)`: the `device_map` of a k-bit load on a simulated `Topology`;
- `model_kwargs(path, fields, topology)`: every keyword passed to `from_pretrained`;
- `dpo_plan(spec, options, topology)`: a `policyload.plan` plan of every load of DPO training;
  or, for a framework whose own DPO load path is run instead of asked for a plan,
  `dpo_loads(case, path)`: every load it made for the `dpo_cases.DPOCase`, recorded, in the
  DPO-plan level's shared shape (`dpo_recording`; `framework_loads.loads_shape`).

A level whose callable is None is skipped, the reason naming the callable and `missing[level]`
(why the framework has none). An adapter raises `NotApplicable` for a case its framework cannot
express (no such field); that case is left out of the comparison and of the counts.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ENV = "POLICYLOAD_IMPLEMENTATION"
#: Built-in names -> `module:object`.
BUILTIN = {
    "reference": "conformance.implementations.reference:IMPLEMENTATION",
    "alignment-handbook": "conformance.implementations.alignment_handbook:IMPLEMENTATION",
    "llamafactory": "conformance.implementations.llamafactory:IMPLEMENTATION",
    "oumi": "conformance.implementations.oumi:IMPLEMENTATION",
    "axolotl": "conformance.implementations.axolotl:IMPLEMENTATION",
    "ms-swift": "conformance.implementations.ms_swift:IMPLEMENTATION",
}
#: Level (as the divergence files name it) -> the adapter's callable for it.
LEVEL_FUNCTIONS = {
    "quantization": "quantization_config",
    "device-map": "device_map",
    "recipe": "model_kwargs",
    "dpo-plan": "dpo_plan",
}
#: A level's other callable, for a framework whose own load path is run (see the module docstring).
LEVEL_RUNS = {"dpo-plan": "dpo_loads"}


class NotApplicable(Exception):
    """Raised by an adapter for a case its framework has no way to express (e.g. no such field)."""


@dataclass(frozen=True)
class Implementation:
    name: str
    #: Its known differences from TRL, strict both ways (`conformance/divergences.py` reads them).
    divergences: Path
    quantization_config: Callable | None = None
    device_map: Callable | None = None
    model_kwargs: Callable | None = None
    dpo_plan: Callable | None = None
    dpo_loads: Callable | None = None
    #: level -> why the framework has no function for that level (said in the skip reason).
    missing: dict = field(default_factory=dict)
    #: One line for the compatibility table: version, and how its code is reached.
    description: str = ""
    #: The distribution its code comes from, and the tox environment that installs it.
    requires: tuple[str, str] | None = None

    def check_installed(self) -> None:
        """Refuse, before any case runs, an implementation whose framework is not installed here."""
        if self.requires is None:
            return
        from importlib.metadata import PackageNotFoundError, version

        distribution, tox_env = self.requires
        try:
            version(distribution)
        except PackageNotFoundError:
            raise ValueError(
                f"{ENV}={self.name!r} needs the distribution {distribution!r}, not installed here; "
                f"accepted: an environment that has it (tox -e {tox_env})"
            ) from None

    def callable_for(self, level: str) -> Callable | None:
        """The adapter's callable for `level` (its plan function, else its run of the framework's load path)."""
        function = getattr(self, LEVEL_FUNCTIONS[level])
        return function if function is not None or level not in LEVEL_RUNS else getattr(self, LEVEL_RUNS[level])

    def function(self, level: str) -> Callable:
        """The adapter's callable for `level`; skips the calling test where the adapter has none."""
        import pytest

        function = self.callable_for(level)
        if function is None:
            pytest.skip(self.skip_reason(level))
        return function

    def skip_reason(self, level: str) -> str:
        attribute = LEVEL_FUNCTIONS[level]
        why = self.missing.get(level, "not provided by the adapter")
        return f"implementation {self.name!r} has no {attribute} function (level {level}): {why}"

    @property
    def is_reference(self) -> bool:
        return self.name == "reference"


def _refuse(value: str, why: str) -> ValueError:
    accepted = f"one of {sorted(BUILTIN)} or 'module:object' naming a conformance.implementation.Implementation"
    return ValueError(f"{ENV}={value!r} is not accepted: {why}; accepted: {accepted}")


def load_implementation(value: str) -> Implementation:
    """The `Implementation` a built-in name or `module:object` names; a clear error otherwise."""
    target = BUILTIN.get(value, value)
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise _refuse(value, "not a built-in name and not of the form module:object")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise _refuse(value, f"module {module_name!r} does not import ({type(error).__name__}: {error})") from error
    if not hasattr(module, attribute):
        raise _refuse(value, f"module {module_name!r} has no attribute {attribute!r}")
    implementation = getattr(module, attribute)
    if not isinstance(implementation, Implementation):
        raise _refuse(value, f"{target} is a {type(implementation).__name__}, not an Implementation")
    return implementation


def builtin_implementations() -> list[Implementation]:
    """Every built-in adapter (defining one imports nothing of its framework)."""
    return [load_implementation(name) for name in BUILTIN]


@cache
def selected() -> Implementation:
    """The implementation this run checks: `$POLICYLOAD_IMPLEMENTATION`, else the reference."""
    return load_implementation(os.environ.get(ENV) or "reference")


#: What this run observed, level -> case id -> None (agrees) or its first difference, one line
#: (listed divergences included): the input of the compatibility table (`conformance.compatibility`).
COMPARISONS: dict[str, dict[str, str | None]] = {}


def record_comparison(level: str, case_id: str, difference: str | None) -> None:
    COMPARISONS.setdefault(level, {})[case_id] = difference
