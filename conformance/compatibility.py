"""The compatibility table: implementation x level -> agrees, or differs in N of M cases (the first
difference spelled out), built from what conformance runs recorded, never typed in.

A run records with `pytest conformance --compatibility PATH` (conftest.py). The recordings the
table of docs/implementations.md is made of are committed in `conformance/recorded/compatibility/`; each
implementation's tox environment re-records and `--check`s its fresh file against the committed
one, so the table cannot go stale. A difference counts whether or not it is a listed divergence:
the table says how an implementation behaves, its divergence file why.

    python -m conformance.compatibility conformance/recorded/compatibility      # print the table
    python -m conformance.compatibility --check out/compatibility/NAME.json DIR  # fresh == committed
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: Level -> column heading (the order of the columns).
COLUMNS = {
    "quantization": "quantization config",
    "device-map": "k-bit device map",
    "recipe": "`from_pretrained` keywords",
    "dpo-plan": "DPO load plan",
}
RECORDED = Path(__file__).with_name("recorded") / "compatibility"


def recording(implementation, comparisons: dict) -> dict:
    """What one run observed, per level: the cases and their first difference, or why it has none."""
    from importlib.metadata import version

    from .trl_release import TRL

    levels = {}
    for level in COLUMNS:
        if implementation.callable_for(level) is None:
            levels[level] = {"no_function": implementation.missing.get(level, "not provided by the adapter")}
        elif comparisons.get(level):
            levels[level] = {"cases": dict(comparisons[level])}
        else:
            levels[level] = {"not_observed": True}
    return {
        "implementation": implementation.name,
        "description": implementation.description,
        "trl": str(TRL),
        "transformers": version("transformers"),
        "levels": levels,
    }


#: A cell's difference is cut here (the full one is in the recording and the test's failure).
WIDTH = 140


def _escape(text: str, width: int | None = None) -> str:
    if width and len(text) > width:
        text = text[: width - 3] + "..."
    return text.replace("|", "\\|").replace("\n", " ")


def cell(level: dict, first: bool = True) -> str:
    """A level's verdict; `first=False` leaves the first difference out (the README's short table)."""
    if "no_function" in level:
        return "no function"
    if "not_observed" in level:
        return "not observed"
    cases = level["cases"]
    differing = sorted(case for case, difference in cases.items() if difference is not None)
    if not differing:
        return f"agrees ({len(cases)} of {len(cases)} cases)"
    counts = f"differs in {len(differing)} of {len(cases)} cases"
    return f"{counts}; first `{differing[0]}`: {_escape(cases[differing[0]], WIDTH)}" if first else counts


def _order(record: dict) -> tuple:
    return (record["implementation"] != "reference", record["implementation"])


def table(records: list[dict]) -> str:
    """The markdown table, the reference first, then by name."""
    lines = [
        "| implementation | TRL | " + " | ".join(COLUMNS.values()) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for record in sorted(records, key=_order):
        cells = [cell(record["levels"][level]) for level in COLUMNS]
        name = f"{record['implementation']} ({record['description']})"
        lines.append(f"| {_escape(name)} | {record['trl']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_table(records: list[dict]) -> str:
    """`table` with counts only: what the README's findings show (the reference's row is left out:
    its differences are TRL's crashes and its changes across releases, listed in divergences.toml)."""
    lines = ["| framework | " + " | ".join(COLUMNS.values()) + " |", "|---|" + "---|" * len(COLUMNS)]
    for record in sorted(records, key=_order):
        if record["implementation"] != "reference":
            cells = [cell(record["levels"][level], first=False) for level in COLUMNS]
            lines.append(f"| {_escape(record['description'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read(directory: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(Path(directory).glob("*.json"))]


def check(fresh_path: Path, directory: Path) -> list[str]:
    """How a fresh recording departs from the committed one of the same implementation."""
    fresh = json.loads(Path(fresh_path).read_text())
    committed_path = Path(directory) / f"{fresh['implementation']}.json"
    if not committed_path.exists():
        return [f"{committed_path} does not exist; commit {fresh_path} there"]
    committed = json.loads(committed_path.read_text())
    problems = [
        f"{key}: recorded {committed.get(key)!r}, now {fresh.get(key)!r}"
        for key in ("trl", "transformers", "description") if committed.get(key) != fresh.get(key)
    ]  # fmt: skip
    for level in COLUMNS:
        before, now = committed["levels"].get(level), fresh["levels"].get(level)
        if before != now:
            cases_before, cases_now = (before or {}).get("cases", {}), (now or {}).get("cases", {})
            every = set(cases_before) | set(cases_now)
            changed = sorted(case for case in every if cases_before.get(case, 0) != cases_now.get(case, 0))
            problems.append(f"{level}: {len(changed)} cases changed, e.g. {changed[:3]} (or its kind of entry changed)")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.compatibility", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", type=Path, default=RECORDED, help="folder of recordings (*.json)")
    parser.add_argument("--check", metavar="FRESH", type=Path, help="compare a fresh recording with the folder's")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.check, args.directory)
        for problem in problems:
            print(f"error: {args.check}: {problem}; re-record and commit it", file=sys.stderr)
        return 1 if problems else 0
    records = read(args.directory)
    if not records:
        print(f"error: no recordings (*.json) in {args.directory}", file=sys.stderr)
        return 1
    sys.stdout.write(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
