"""`python -m policyload.sweep`: list the releases, sweep them, write the report (and with
`--record` the committed copy); `--docs` only regenerates the block of docs/trl-releases.md from that copy.

A `SweepError` (or the drift report's `DriftError`) is one `error: ...` line on stderr and exit 2,
never a traceback. An index that cannot be listed is fatal only without `--releases`: with it,
the given releases still run, and the releases between them are not filled in.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .. import drift
from .errors import SweepError
from .inputs import ROOT
from .record import PAGE, RECORD, load_record, page_with, save_record
from .releases import SINCE, final_releases, index_versions
from .report import history, with_skipped, write_outputs
from .runs import Sweeper


def default_cache() -> Path:
    """Where environments and results live: `$POLICYLOAD_SWEEP_CACHE`, else ~/.cache/policyload/sweep."""
    return Path(os.environ.get("POLICYLOAD_SWEEP_CACHE", Path.home() / ".cache" / "policyload" / "sweep"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m policyload.sweep",
        description="sweep every final TRL release: status, observations, drift by exact release",
    )
    parser.add_argument("--releases", nargs="+", help=f"these releases only (default: every final one since {SINCE})")
    parser.add_argument("--since", default=SINCE, help="oldest release swept (default %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="releases at a time (default %(default)s)")
    parser.add_argument(
        "--cache", type=Path, default=default_cache(), help="envs and results ($POLICYLOAD_SWEEP_CACHE)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "sweep", help="report folder (default out/sweep)")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the environments")
    parser.add_argument("--retry-failed", action="store_true", help="re-run releases that did not install or import")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per install / test run")
    parser.add_argument("--record", action="store_true", help=f"also write the results to {RECORD.relative_to(ROOT)}/")
    parser.add_argument(
        "--docs",
        action="store_true",
        help=f"only rewrite {PAGE.relative_to(ROOT)}'s history block from the committed record",
    )
    args = parser.parse_args(argv)
    try:
        if args.docs:
            PAGE.write_text(page_with(history(load_record(RECORD)), PAGE.read_text()))
            return 0
        start = time.monotonic()
        try:
            index = final_releases(index_versions("trl"), args.since)
        except SweepError as error:
            if not args.releases:
                raise
            print(f"warning: {error}; releases between those given are not listed", file=sys.stderr)
            index = []
        releases = final_releases(args.releases, "0") if args.releases else index
        sweeper = Sweeper(args.cache, args.out, args.python, args.retry_failed, args.timeout)
        results = with_skipped(sweeper.sweep(releases, args.jobs), index, sweeper)
        print(write_outputs(results, args.out))
        if args.record:
            save_record(results, RECORD)
        print(f"sweep: {len(releases)} releases in {time.monotonic() - start:.0f} s; report in {args.out}/report.md")
    except (SweepError, drift.DriftError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
