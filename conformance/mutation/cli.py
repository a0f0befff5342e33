"""Mutation testing of the reference: plant a fault in `policyload`, run the tests that can reach
it, and see them fail.

The command line, kept apart from `__main__.py` so that tests can call `main(argv)` without
`python -m` (importing `__main__` from the package would make runpy warn and run it twice):

    python -m conformance.mutation            # everything: baselines, then every mutant
    python -m conformance.mutation --list     # the mutants and their selections
    python -m conformance.mutation --only ID [ID ...] [--jobs 2] [--json out/mutation.json]

Exit status: 0 every mutant killed, 1 a mutant survived, 2 a harness error. The whole list is
read and every snippet checked even for `--list` or `--only`, so a stale entry is caught by any
run, not only the full one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .mutants import MUTANTS_FILE, HarnessError, check_snippet, load_mutants
from .report import print_list, report
from .runner import DEFAULT_TIMEOUT_S, run_all


def _parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m conformance.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=Path, default=MUTANTS_FILE, help="the mutant list (TOML)")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these mutants only")
    parser.add_argument("--jobs", type=int, default=1, choices=(1, 2), help="child pytest runs at once (default 1)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per child run")
    parser.add_argument("--list", action="store_true", help="print the mutants and their selections, run nothing")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    options = _parse(argv)
    started = time.monotonic()
    try:
        listed = load_mutants(options.mutants)
        for mutant in [*listed.mutants, *listed.equivalents]:
            check_snippet(mutant)
        mutants = list(listed.mutants)
        if options.only:
            unknown = sorted(set(options.only) - {m.id for m in mutants})
            if unknown:
                raise HarnessError(f"--only: unknown mutant ids {unknown}")
            mutants = [m for m in mutants if m.id in options.only]
        if options.list:
            print_list(listed, mutants)
            return 0
        ordered = run_all(listed, mutants, options.jobs, options.timeout)
        return report(listed, mutants, ordered, time.monotonic() - started, options.json)
    except HarnessError as error:
        print(f"mutation: harness error: {error}", file=sys.stderr)
        return 2
