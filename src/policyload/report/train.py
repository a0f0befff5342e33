"""The training-step table: the first DPO step's peak as the allocator read it (benchmarks/test_train.py),
the plan's (`policyload.plan.step`), and the peers' estimates, each as percent off the measured peak;
then, per case, each component the phases isolate, planned against measured. A case whose memory the
machine could not measure (tiny checkpoints on CPU) shows n/a; a case that did not run, its outcome;
a run without a GPU says the GPU rows are not yet measured.
"""

from __future__ import annotations

from .cells import ROUTINE_SKIP, format_bytes, not_measured
from .runs import Run

#: Components in the order of the step (benchmarks/test_train.COMPONENT_PLAN, then the not isolated).
COMPONENTS = ("step_start", "activations", "reference_forward", "gradients", "optimizer_state", "logits")
NOT_YET_MEASURED = "GPU (torch.cuda.max_memory_allocated per phase): not yet measured (no GPU lent to this run)"


def _off(value) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def _size(args: dict) -> str:
    return f"{args['per_device_train_batch_size']}x{args['max_length']}"


def train_table(run: Run) -> str:
    """The markdown training-step tables of `run`, or "" when it has no training case."""
    if not run.train and not run.train_outcomes:
        return ""
    # Where no case's memory was measured (the tiny run on CPU) the table is latency and the plan, and
    # why memory is n/a is said once below it, not as a column of n/a per case and per peer.
    measured_any = any(extra["train_step"]["peak"]["measured_bytes"] is not None for extra in run.train)
    peers = sorted({name for extra in run.train for name in extra.get("peers", {})}) if measured_any else []
    columns = ["measured peak", "planned peak", "plan off"] if measured_any else ["planned peak"]
    columns += [f"{name} off" for name in peers]
    lines = [
        "Training step: the first DPO optimizer step's peak, read from the allocator, against the plan and "
        "the peers (off = estimate / measured - 1):"
        if measured_any
        else "Training step: latency of the first DPO optimizer steps and the plan's peak (memory not measurable "
        "at this size):",
        "",
        "| case | setup | dtype | attention | checkpointing | batch x length | step latency | "
        + " | ".join(columns)
        + " |",
        "|---|---|---|---|---|---|---:|" + "---:|" * len(columns),
    ]
    measured_ids = {extra["case_id"] for extra in run.train}
    missing = [o for o in run.train_outcomes if o["case_id"] not in measured_ids]
    routine = [o for o in missing if o.get("reason") == ROUTINE_SKIP]
    items = [(extra["case_id"], extra) for extra in run.train]
    items += [(o["case_id"], o) for o in missing if o not in routine]
    for case_id, item in sorted(items, key=lambda pair: pair[0]):
        if "train_step" not in item:
            reason = f"{item.get('outcome', '?')}: {item.get('reason', '')}".replace("|", "/")
            head = f"| {case_id} | {item.get('train_setup', '?')} | {item['dtype']} | {reason} "
            lines.append(head + "| n/a " * (3 + len(columns)) + "|")
            continue
        step, args = item["train_step"], item["training_arguments"]
        cells = [
            case_id, item["train_setup"], item["dtype"], item["attn_implementation"],
            "on" if args["gradient_checkpointing"] else "off", _size(args), f"{item['median_latency_s']:.1f} s",
            *([format_bytes(step["peak"]["measured_bytes"])] if measured_any else []),
            format_bytes(step["peak"]["planned_bytes"]),
            *([_off(step["peak"]["off"])] if measured_any else []),
            *(_off(item["peers"].get(name, {}).get("off")) for name in peers),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if routine:
        lines += ["", f"({len(routine)} training cases skipped: {ROUTINE_SKIP})"]
    if run.train and not measured_any:
        sources = [extra.get("memory_source") or "not recorded" for extra in run.train]
        lines += ["", not_measured("Training-step memory", sources)]
    if not any(extra.get("device") == "cuda" for extra in run.train):
        lines += ["", NOT_YET_MEASURED]
    components = _component_table(run)
    return "\n".join(lines) + "\n" + ("\n" + components if components else "")


def _measured_cases(run: Run) -> list[dict]:
    """The training cases whose step peak the machine measured, in case order."""
    return [e for e in sorted(run.train, key=lambda e: e["case_id"]) if e["train_step"]["peak"]["measured_bytes"]]


def _component_table(run: Run) -> str:
    """Planned / measured per isolated component, for the cases whose memory was measured."""
    measured = _measured_cases(run)
    if not measured:
        return ""
    lines = [
        "Training step by component (planned / measured, off): what the phase boundaries isolate "
        "(step_start: every weight; activations: kept across the policy forward; reference_forward: its "
        "transient; gradients: live at optimizer.step() less the step's start; optimizer_state: growth across "
        "the first optimizer.step()):",
        "",
        "| case | " + " | ".join(COMPONENTS) + " |",
        "|---|" + "---:|" * len(COMPONENTS),
    ]
    for extra in measured:
        cells = []
        for name in COMPONENTS:
            component = extra["train_step"]["components"].get(name, {})
            if component.get("measured_bytes") is None:
                cells.append(f"{format_bytes(component.get('planned_bytes'))} / n/a")
            else:
                cells.append(
                    f"{format_bytes(component['planned_bytes'])} / {format_bytes(component['measured_bytes'])} "
                    f"({_off(component['off'])})"
                )
        lines.append(f"| {extra['case_id']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def peer_table(run: Run, names: tuple[str, ...]) -> str:
    """The named peers' estimates beside each measured step peak, for peers that exist only where their
    library installs (DeepSpeed's, in `tox -e dist-cpu`): the main table, made where it is not installed,
    says n/a for them, and this one is printed where it is."""
    measured = _measured_cases(run)
    lines = [
        "| case | measured peak | " + " | ".join(f"{name} | off" for name in names) + " |",
        "|---|---:|" + "---:|---:|" * len(names),
    ]
    for extra in measured:
        cells = [extra["case_id"], format_bytes(extra["train_step"]["peak"]["measured_bytes"])]
        for name in names:
            peer = extra["peers"].get(name, {})
            estimate = peer.get("estimate_bytes")
            cells += ["n/a" if estimate is None else format_bytes(estimate), _off(peer.get("off"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
