"""The DPO bill table: what TRL's DPOTrainer held once constructed (benchmarks/test_dpo.py), the
planner's figure (`policyload.plan.bill`) and how far off it is, per case; a case whose memory the
machine could not measure (tiny checkpoints on CPU) shows n/a, and a case that did not run its outcome.
"""

from __future__ import annotations

from .cells import ROUTINE_SKIP, format_bytes, not_measured
from .runs import Run

_HEADER = (
    "| case | setup | checkpoint | dtype | quantization | outcome | __init__ latency | measured bill "
    "| planned bill | planner off | measured peak | planned peak |"
)


def _off(measured, planned) -> str:
    return "n/a" if measured is None or not planned else f"{planned / measured - 1:+.1%}"


def _latency_table(run: Run) -> str:
    """Where no bill was measured (the tiny run on CPU): each case's __init__ latency, and why once."""
    lines = [
        "DPO cases: DPOTrainer.__init__ latency (the bill is not measurable at this size):",
        "",
        "| case | setup | checkpoint | dtype | quantization | outcome | __init__ latency |",
        "|---|---|---|---|---|---|---:|",
    ]
    for extra in sorted(run.dpo, key=lambda item: item["case_id"]):
        lines.append(
            f"| {extra['case_id']} | {extra.get('dpo_setup', '?')} | {extra['checkpoint']} | {extra['dtype']} "
            f"| {extra['quantization']} | measured | {extra['median_latency_s']:.2f} s |"
        )
    measured_ids = {extra["case_id"] for extra in run.dpo}
    missing = [o for o in run.dpo_outcomes if o["case_id"] not in measured_ids]
    routine = [o for o in missing if o.get("reason") == ROUTINE_SKIP]
    for outcome in sorted((o for o in missing if o not in routine), key=lambda o: o["case_id"]):
        reason = f"{outcome.get('outcome', '?')}: {outcome.get('reason', '')}".replace("|", "/")
        lines.append(f"| {outcome['case_id']} | {outcome.get('dpo_setup', '?')} | {outcome['checkpoint']} "
                     f"| {outcome['dtype']} | {outcome['quantization']} | {reason} | n/a |")
    if routine:
        lines += ["", f"({len(routine)} DPO cases skipped: {ROUTINE_SKIP})"]
    sources = [(extra.get("dpo_bill") or {}).get("measured", {}).get("source") or "not recorded" for extra in run.dpo]
    return "\n".join(lines + ["", not_measured("DPO bill", sources)]) + "\n"


def dpo_table(run: Run) -> str:
    """The markdown DPO bill table of `run`, or "" when it has no DPO case."""
    if not run.dpo and not run.dpo_outcomes:
        return ""
    bills = [(extra.get("dpo_bill") or {}).get("measured") or {} for extra in run.dpo]
    if run.dpo and all(bill.get("total_bytes") is None for bill in bills):
        return _latency_table(run)
    lines = [
        "DPO bill: what DPOTrainer holds once constructed, measured, against the planner "
        "(planner off = planned / measured - 1):",
        "",
        _HEADER,
        "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    measured_ids = {extra["case_id"] for extra in run.dpo}
    items = [(extra["case_id"], extra) for extra in run.dpo]
    missing = [o for o in run.dpo_outcomes if o["case_id"] not in measured_ids]
    routine = [o for o in missing if o.get("reason") == ROUTINE_SKIP]
    items += [(o["case_id"], o) for o in missing if o not in routine]
    for case_id, item in sorted(items, key=lambda pair: pair[0]):
        setup, checkpoint = item.get("dpo_setup", "?"), item["checkpoint"]
        head = f"| {case_id} | {setup} | {checkpoint} | {item['dtype']} | {item['quantization']}"
        if "dpo_bill" not in item:
            reason = f"{item.get('outcome', '?')}: {item.get('reason', '')}".replace("|", "/")
            lines.append(f"{head} | {reason} " + "| n/a " * 6 + "|")
            continue
        planned, measured = item["dpo_bill"]["planned"], item["dpo_bill"]["measured"]
        lines.append(
            f"{head} | measured | {item['median_latency_s']:.2f} s | {format_bytes(measured['total_bytes'])} "
            f"| {format_bytes(planned['total_bytes'])} | {_off(measured['total_bytes'], planned['total_bytes'])} "
            f"| {format_bytes(measured['peak_bytes'])} | {format_bytes(planned['peak_bytes'])} |"
        )
    if routine:
        lines += ["", f"({len(routine)} DPO cases skipped: {ROUTINE_SKIP})"]
    return "\n".join(lines) + "\n"
