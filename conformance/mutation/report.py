"""What the harness says: the list (`--list`), the score and the survivors, and the JSON record.

The survivors are printed with their file, function and the exact pytest selection, because a
survivor is a to-do: either a test to write (run that selection to see it pass under the fault)
or an equivalent mutant to move to `[[equivalent]]` with its reason. The JSON record
(`--json`) is what `tox -e mutation` leaves in `out/` for a later look.
"""

from __future__ import annotations

import json
from pathlib import Path

from .mutants import Mutant, MutantList
from .runner import Result


def describe_selection(args: tuple[str, ...]) -> str:
    return " ".join(f"'{arg}'" if " " in arg else arg for arg in args)


def print_list(listed: MutantList, mutants: list[Mutant]) -> None:
    """`--list`: the mutants to run, then the equivalent ones, one line each."""
    for mutant in mutants:
        print(f"{mutant.id:32} {mutant.target:28} [{mutant.selection}] {mutant.description}")
    for equivalent in listed.equivalents:
        print(f"{equivalent.id:32} {equivalent.target:28} EQUIVALENT: {equivalent.reason}")


def report(
    listed: MutantList, mutants: list[Mutant], ordered: list[Result], elapsed: float, json_path: Path | None
) -> int:
    """Print the score and the survivors, write `json_path` if given; the exit status (1 on a survivor)."""
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
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
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
        json_path.write_text(json.dumps(record, indent=1))
    return 1 if survivors else 0
