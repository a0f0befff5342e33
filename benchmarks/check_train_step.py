"""Hold the training-step planner to the measured first step: the planned step peak within 5% of
the allocator's measured peak, and each component the phases isolate within 10%.

    python -m benchmarks.check_train_step out/bench-realsize-cpu.json [--peak 5%] [--component 10%] [--replan]

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

from policyload.measure.train_step import PHASES, STEPS, isolated_components
from policyload.report import parse_percent
from policyload.report.runs import load_run
from policyload.report.tables import format_bytes

from .check_memory import failed_cases, verdict

#: The marks every hooked step has (the reference forward's are absent when precomputed), per step.
REQUIRED_MARKS = tuple(
    f"{step}/{mark}" for step in range(1, STEPS + 1)
    for mark in ("policy_forward:begin", "backward:end", "optimizer_step:begin", "optimizer_step:end")
)


#: Measured components (`isolated_components`) -> the plan's components they are held to.
#: "step_start" is every weight the step starts with; the plan's logits are not isolated by the
#: phases (TRL 1.16's fused LM head computes them in tiles inside the policy forward).
COMPONENT_PLAN = {
    "step_start": ("policy", "reference", "adapter"),
    "activations": ("activations",),
    "reference_forward": ("reference_forward",),
    "gradients": ("gradients",),
    "optimizer_state": ("optimizer_state",),
}
NOT_ISOLATED = {
    "logits": "not isolated: TRL 1.16's fused LM head (trainer/utils.py add_fused_lm_head) computes the "
    "logits in tiles inside the policy forward, among its other transients",
}


def planned_step(case, config, device: str) -> dict:
    """The plan of `case` on `device` ("cuda" or "cpu"): {"components", "phases", "peak_bytes"} (bytes)."""
    from policyload.plan.step import TrainOptions, plan_training_step

    train = TrainOptions(**case.training_arguments, device=device)
    plan = plan_training_step(case.spec, case.options, train, config)
    return {"components": dict(plan.components), "phases": dict(plan.phases), "peak_bytes": plan.peak_bytes}


def off(planned, measured):
    """planned / measured - 1, or None where either is missing."""
    return None if planned is None or not measured else planned / measured - 1


def _off(value) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def step_columns(planned: dict, steps: list[dict] | None) -> dict:
    """`train_step`: planned and measured per component (isolated in the first step), per phase and at
    the peak (of the second step: the plan is of a step that starts with the optimizer's state), each
    with planned / measured - 1; None where not measured or not isolated. `steps`: the child's
    `train_steps` (`policyload.measure.train_step`), None where memory is not measurable."""
    first, steady = (steps[0], steps[-1]) if steps else (None, None)
    measured = isolated_components(first["phases"]) if first else {}
    components = {}
    for name, plan_names in COMPONENT_PLAN.items():
        value = sum(planned["components"].get(key, 0) for key in plan_names)
        components[name] = {
            "planned_bytes": value, "measured_bytes": measured.get(name), "off": off(value, measured.get(name)),
            "plan_components": list(plan_names),
        }
    for name, reason in NOT_ISOLATED.items():
        components[name] = {
            "planned_bytes": planned["components"].get(name), "measured_bytes": None, "off": None, "reason": reason,
        }
    phases = {}
    for phase in PHASES:
        reading = (steady or {}).get("phases", {}).get(phase)
        value = planned["phases"].get(phase) or None  # the plan's 0: no such phase (precomputed reference)
        phases[phase] = {
            "planned_peak_bytes": value,
            "measured_peak_bytes": reading and reading["peak_bytes"],
            "off": off(value, reading and reading["peak_bytes"]),
        }
    peak = steady["step_peak_bytes"] if steady else None
    planned_peak = planned["peak_bytes"]
    return {
        "planned": planned,
        "components": components,
        "phases": phases,
        "peak": {"planned_bytes": planned_peak, "measured_bytes": peak, "off": off(planned_peak, peak)},
        "first_step_peak_bytes": first["step_peak_bytes"] if first else None,
    }


def peer_columns(case, config, measured_peak, device: str) -> dict:
    """The peers' training estimates for the case (`policyload.estimators.training_estimates`: the
    policy alone), each with its percent off the measured step peak (the second step's); an estimate a
    peer cannot give is None with its reason."""
    from policyload import estimators
    from policyload.plan.step import TrainOptions

    train = TrainOptions(**case.training_arguments, device=device)
    peers = estimators.training_estimates(case.spec, train, config)
    reasons = peers.pop("reasons", {})
    columns = {}
    for name, value in peers.items():
        columns[name] = {"estimate_bytes": value, "off": off(value, measured_peak)}
        if value is None:
            why = next((reason for key, reason in reasons.items() if name.startswith(key)), None)
            columns[name]["reason"] = why or "the estimator gives no figure for this case"
    return columns


def case_of(extra: dict):
    """The `TrainCase` a recorded benchmark ran, from its extra_info, and the config of its checkpoint
    (tiny: the built-in config; real-size: the shape's config; the weights are not needed)."""
    from benchmarks.matrix import Checkpoint
    from benchmarks.train_cases import TrainCase
    from fixtures.checkpoints import TINY_CONFIGS, make_config
    from fixtures.realsize import realsize_config

    token, kind = extra["checkpoint"], extra["checkpoint_kind"]
    if kind == "realsize":
        config = realsize_config(token)
    elif kind == "tiny":
        config_class, fields = TINY_CONFIGS[token]
        config = make_config(config_class, **fields)
    else:
        raise ValueError(f"checkpoint_kind={kind!r} is not accepted for re-planning; accepted: 'tiny', 'realsize'")
    args = extra["training_arguments"]
    case = TrainCase(
        Checkpoint(token, token, kind), extra["train_setup"], dtype=extra["dtype"],
        attn_implementation=extra["attn_implementation"], gradient_checkpointing=args["gradient_checkpointing"],
        batch_size=args["per_device_train_batch_size"], max_length=args["max_length"],
    )
    if case.id != extra["case_id"]:
        raise ValueError(f"case_id={extra['case_id']!r}: rebuilt as {case.id!r} from its extra_info")
    return case, config


def replan(run) -> None:
    """Recompute the planned columns of `run`'s training cases (and the peers') with today's planner,
    against the readings the run recorded (`extra_info["reply"]`): the measurement is the run's, the
    plan is the code's, so a planner change is judged without re-running real-size steps."""
    for extra in run.train:
        case, config = case_of(extra)
        planned = planned_step(case, config, extra["device"])
        measured = extra["train_step"]["peak"]["measured_bytes"] is not None
        steps = extra["reply"]["train_steps"] if measured else None
        extra["train_step"] = step_columns(planned, steps)
        extra["peers"] = peer_columns(case, config, steps[-1]["step_peak_bytes"] if measured else None, extra["device"])


def judge(run, peak_tolerance: float, component_tolerance: float) -> tuple[list[str], list[str], int]:
    """(lines to print, problems, cases checked) of `run` against the tolerances (fractions)."""
    lines, problems, checked = [], failed_cases(run.train_outcomes), 0
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.check_train_step", description=__doc__.splitlines()[0])
    parser.add_argument("json")
    parser.add_argument("--peak", default="5%", help="tolerance of the planned step peak (default 5%%)")
    parser.add_argument("--component", default="10%", help="tolerance of each isolated component (default 10%%)")
    parser.add_argument(
        "--replan", action="store_true",
        help="judge today's planner against the recorded readings, not the plan the run recorded",
    )
    args = parser.parse_args(argv)
    run = load_run(args.json)
    if args.replan:
        replan(run)
    lines, problems, checked = judge(run, parse_percent(args.peak), parse_percent(args.component))
    for line in lines:
        print(line)
    return verdict(problems, checked, "no training case with a measured step")


if __name__ == "__main__":
    sys.exit(main())
