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

The modules, one job each: `releases` lists the releases and caps their transformers, `inputs`
hashes what decides a result (the suite hash, the install key), `environments` makes and reuses
the uv environments, `row` is one release's line of the report, `runs` runs the suite in them
and keeps each result, `report` writes the output folder, `record` the committed copy and the
documentation page's block, `cli` the command line. The names below are re-exported so that
`from policyload.sweep import ...` keeps working. Like the drift report, none of this imports
torch or transformers.
"""

# Re-exported as well: the tests reach `sweep.sys.executable` and build rows with `sweep.asdict`.
import sys
from dataclasses import asdict

from .cli import default_cache, main
from .environments import LAZY, MAX_FALLBACKS, PROBE, Environments, index_options, interpreter_version, uv_command
from .errors import SweepError, last_line
from .inputs import CONSTRAINTS, LEVEL_FILES, PACKAGES, ROOT, digest, install_key, suite_hash
from .record import BEGIN, END, PAGE, RECORD, load_record, page_with, save_record
from .releases import KNOWN_BREAKS, SINCE, Break, final_releases, index_versions, known_breaks
from .report import history, runs_of, status_table, with_skipped, write_outputs
from .row import Row
from .runs import RAN, Sweeper, junit_counts

__all__ = [
    "BEGIN",
    "CONSTRAINTS",
    "END",
    "KNOWN_BREAKS",
    "LAZY",
    "LEVEL_FILES",
    "MAX_FALLBACKS",
    "PACKAGES",
    "PROBE",
    "RAN",
    "PAGE",
    "RECORD",
    "ROOT",
    "SINCE",
    "Break",
    "Environments",
    "Row",
    "SweepError",
    "Sweeper",
    "asdict",
    "default_cache",
    "digest",
    "final_releases",
    "history",
    "index_options",
    "index_versions",
    "install_key",
    "interpreter_version",
    "junit_counts",
    "known_breaks",
    "last_line",
    "load_record",
    "main",
    "page_with",
    "runs_of",
    "save_record",
    "status_table",
    "suite_hash",
    "sys",
    "uv_command",
    "with_skipped",
    "write_outputs",
]
