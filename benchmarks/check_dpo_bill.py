"""Hold the DPO planner to the measured bill: `total_bytes` within 5% of what DPOTrainer held.

    python -m benchmarks.check_dpo_bill out/bench-realsize-cpu.json [--total 5%]

Reads the DPO cases of a benchmark JSON (benchmarks/test_dpo.py). A case whose memory is not
measurable (tiny checkpoints on CPU) is listed and not judged. Exits 1 when a measured case's
planned total is off by more than the tolerance, when a DPO case failed or ran out of memory, or
when a case was measured before the trainer was constructed (its record does not say the models
the trainer held); 2 when the run has no measured DPO case at all (nothing was checked).
The peak is printed, not judged: the planner's peak is an accelerator's (module `policyload.plan.bill`),
and a CPU host also keeps the mapped checkpoint.
"""

from __future__ import annotations

import argparse
import sys

from policyload.report import parse_percent
from policyload.report.cells import format_bytes
from policyload.report.runs import load_run

from .check_memory import failed_cases, verdict


def judge(run, tolerance: float) -> tuple[list[str], list[str], int]:
    """(lines to print, problems, cases checked) of `run` against `tolerance` (a fraction)."""
    lines, problems, checked = [], failed_cases(run.dpo_outcomes), 0
    for extra in sorted(run.dpo, key=lambda e: e["case_id"]):
        case, bill = extra["case_id"], extra["dpo_bill"]
        planned, measured = bill["planned"], bill["measured"]
        if not bill["layout"].get("models_held"):
            problems.append(f"{case}: no model held by the trainer was recorded: not a bill after DPOTrainer.__init__")
            continue
        if measured["total_bytes"] is None:
            lines.append(f"{case}: memory not measurable, not judged ({measured['source']})")
            continue
        checked += 1
        off = planned["total_bytes"] / measured["total_bytes"] - 1
        lines.append(
            f"{case}: planned {format_bytes(planned['total_bytes'])} vs measured "
            f"{format_bytes(measured['total_bytes'])} ({off:+.1%}); peak planned "
            f"{format_bytes(planned['peak_bytes'])}, measured {format_bytes(measured['peak_bytes'])}"
        )
        if abs(off) > tolerance:
            problems.append(f"{case}: planned total off by {off:+.1%} (tolerance {tolerance:.0%})")
    return lines, problems, checked


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.check_dpo_bill", description=__doc__.splitlines()[0])
    parser.add_argument("json")
    parser.add_argument("--total", default="5%", help="tolerance of the planned total (default 5%%)")
    args = parser.parse_args(argv)
    lines, problems, checked = judge(load_run(args.json), parse_percent(args.total))
    for line in lines:
        print(line)
    return verdict(problems, checked, "no DPO case with a measured bill")


if __name__ == "__main__":
    sys.exit(main())
