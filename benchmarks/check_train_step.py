"""Hold the training-step planner to the measured first step: the planned step peak within 5% of
the allocator's measured peak, and each component the phases isolate within 10%.

    python -m benchmarks.check_train_step out/bench-realsize-cpu.json [--peak 5%] [--component 10%]

Reads the training cases of a benchmark JSON (benchmarks/test_train.py). A case whose memory is not
measurable (tiny checkpoints on CPU) is listed and not judged. Exits 1 when a measured case's peak
or an isolated component is off by more than its tolerance, when a training case failed or ran out
of memory, or when a case's record lacks a phase the step must have (it was not one hooked step);
2 when the run has no measured training case at all (nothing was checked). The verdict is
check_memory's, shared with check_dpo_bill.
"""

from __future__ import annotations

import argparse
import sys

from policyload.report import parse_percent
from policyload.report.runs import load_run
from policyload.report.tables import format_bytes

from .check_memory import verdict

#: The marks every hooked step has (the reference forward's are absent when precomputed).
REQUIRED_MARKS = ("policy_forward:begin", "backward:end", "optimizer_step:end")


def judge(run, peak_tolerance: float, component_tolerance: float) -> tuple[list[str], list[str], int]:
    """(lines to print, problems, cases checked) of `run` against the tolerances (fractions)."""
    lines, problems, checked = [], [], 0
    for outcome in run.train_outcomes:
        if outcome.get("outcome") in ("failed", "oom"):
            problems.append(f"{outcome['case_id']}: {outcome['outcome']}: {outcome.get('reason', '')}")
    for extra in sorted(run.train, key=lambda e: e["case_id"]):
        case, step = extra["case_id"], extra["train_step"]
        missing = [mark for mark in REQUIRED_MARKS if mark not in extra.get("marks", [])]
        if missing:
            problems.append(f"{case}: marks {missing} not recorded: not one hooked optimizer step")
            continue
        peak = step["peak"]
        if peak["measured_bytes"] is None:
            lines.append(f"{case}: memory not measurable, not judged ({extra['memory_source']})")
            continue
        checked += 1
        lines.append(
            f"{case}: step peak planned {format_bytes(peak['planned_bytes'])} vs measured "
            f"{format_bytes(peak['measured_bytes'])} ({peak['off']:+.1%})"
        )
        if abs(peak["off"]) > peak_tolerance:
            problems.append(f"{case}: planned step peak off by {peak['off']:+.1%} (tolerance {peak_tolerance:.0%})")
        for name, component in sorted(step["components"].items()):
            if component["measured_bytes"] is None:
                continue
            lines.append(
                f"  {name}: planned {format_bytes(component['planned_bytes'])} vs measured "
                f"{format_bytes(component['measured_bytes'])} ({_off(component['off'])})"
            )
            if component["off"] is None or abs(component["off"]) > component_tolerance:
                problems.append(
                    f"{case}: {name} planned {format_bytes(component['planned_bytes'])}, measured "
                    f"{format_bytes(component['measured_bytes'])} ({_off(component['off'])}; "
                    f"tolerance {component_tolerance:.0%})"
                )
    return lines, problems, checked


def _off(value) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.check_train_step", description=__doc__.splitlines()[0])
    parser.add_argument("json")
    parser.add_argument("--peak", default="5%", help="tolerance of the planned step peak (default 5%%)")
    parser.add_argument("--component", default="10%", help="tolerance of each isolated component (default 10%%)")
    args = parser.parse_args(argv)
    run = load_run(args.json)
    lines, problems, checked = judge(run, parse_percent(args.peak), parse_percent(args.component))
    for line in lines:
        print(line)
    return verdict(problems, checked, "no training case with a measured step")


if __name__ == "__main__":
    sys.exit(main())
