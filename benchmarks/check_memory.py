"""Hold a run's measured host memory to the memory model: resident within 5%, peak within 10%.

    python -m benchmarks.check_memory out/bench-realsize-cpu.json [--resident 5%] [--peak 10%]

Cases whose memory is not measurable (tiny checkpoints) are listed as such and not judged. Exits 1
when a measured case is off by more than the tolerance, or when a case failed or ran out of memory;
2 when the run has no measured case at all (nothing was checked).
"""

from __future__ import annotations

import argparse
import sys

from policyload.report import parse_percent
from policyload.report.cells import format_bytes
from policyload.report.runs import load_run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.check_memory", description=__doc__.splitlines()[0])
    parser.add_argument("json")
    parser.add_argument("--resident", default="5%", help="tolerance of the predicted resident memory (default 5%%)")
    parser.add_argument("--peak", default="10%", help="tolerance of the predicted peak (default 10%%)")
    args = parser.parse_args(argv)
    run = load_run(args.json)
    resident_tolerance, peak_tolerance = parse_percent(args.resident), parse_percent(args.peak)
    problems, checked = failed_cases(run.outcomes), 0
    for row in sorted(run.rows, key=lambda r: r.key):
        if row.memory_measured_bytes is None or row.memory_peak_measured_bytes is None:
            print(f"{row.key}: memory not measurable, not judged")
            continue
        checked += 1
        resident = row.memory_measured_bytes / row.memory_predicted_bytes - 1
        peak = row.memory_peak_measured_bytes / row.memory_peak_predicted_bytes - 1
        print(
            f"{row.key}: resident {format_bytes(row.memory_measured_bytes)} vs predicted "
            f"{format_bytes(row.memory_predicted_bytes)} ({resident:+.1%}); peak "
            f"{format_bytes(row.memory_peak_measured_bytes)} vs {format_bytes(row.memory_peak_predicted_bytes)} "
            f"({peak:+.1%})"
        )
        if abs(resident) > resident_tolerance:
            problems.append(f"{row.key}: resident off by {resident:+.1%} (tolerance {resident_tolerance:.0%})")
        if abs(peak) > peak_tolerance:
            problems.append(f"{row.key}: peak off by {peak:+.1%} (tolerance {peak_tolerance:.0%})")
    return verdict(problems, checked, "no case with a measured memory figure")


def failed_cases(outcomes) -> list[str]:
    """One problem per case that failed or ran out of memory: a check never passes a run whose case
    did not run to its measurement."""
    failed = [o for o in outcomes if o.get("outcome") in ("failed", "oom")]
    return [f"{o['case_id']}: {o['outcome']}: {o.get('reason', '')}" for o in failed]


def verdict(problems: list[str], checked: int, nothing_measured: str) -> int:
    """Print the problems; the exit code of a check of measured cases: 0 all within tolerance, 1 a
    problem, 2 nothing was measured (`nothing_measured` says what was missing)."""
    for problem in problems:
        print(f"problem: {problem}")
    if not checked and not problems:
        print(f"error: {nothing_measured}: nothing was checked", file=sys.stderr)
        return 2
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
