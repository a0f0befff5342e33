"""One release's line of the sweep's report: what the environments (install, import probe), the
runs (tests) and the report each fill in or read. Its own module, so that those three import it
without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    """One release's line of the report (`releases.json`, the status table)."""

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
