"""What a person reads of a run: its cells formatted, a markdown table and a chart.

matplotlib is imported inside `write_chart` only: `compare`, `device` and `noise` run where the
`bench` extra (which brings matplotlib) may be missing, and the import costs a second.
"""

from __future__ import annotations

from pathlib import Path

from .cells import ROUTINE_SKIP, format_bytes, fraction, not_measured, percent_off, ratio
from .dpo import dpo_table
from .runs import Run
from .train import train_table

#: Versions named in the table's heading line, in this order, when the run recorded them.
_LIBRARIES = ("torch", "transformers", "trl", "bitsandbytes", "accelerate", "peft")
_HEADER = (
    "| checkpoint | dtype | quantization | outcome | median latency | peak RSS | resident RSS "
    "| measured resident | predicted resident | measured/predicted | measured peak | predicted peak "
    "| bandwidth fraction |"
)
_RULE = "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
#: The table of a run where no case's memory was measured: what it did measure.
_LATENCY_HEADER = "| checkpoint | dtype | quantization | outcome | median latency |"
_LATENCY_RULE = "|---|---|---|---|---:|"
def _sort_key(row):
    return (row.checkpoint, row.dtype, row.quantization)


def estimator_table(run: Run) -> str:
    """Each estimator's figure and its error against the measured resident memory, per case
    measured on the machine (cases whose memory is not measurable are left out)."""
    rows = [row for row in sorted(run.rows, key=_sort_key) if row.memory_measured_bytes and row.memory_estimates]
    if not rows:
        return ""
    names = list(dict.fromkeys(name for row in rows for name in row.memory_estimates))
    lines = [
        "Memory estimators against the measured resident memory (percent off measured):",
        "",
        "| checkpoint | dtype | quantization | measured | " + " | ".join(names) + " |",
        "|---|---|---|---:|" + "---:|" * len(names),
    ]
    for row in rows:
        cells = [percent_off(row.memory_estimates.get(name), row.memory_measured_bytes) for name in names]
        lines.append(
            f"| {row.checkpoint} | {row.dtype} | {row.quantization} | {format_bytes(row.memory_measured_bytes)} | "
            + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def _outcome_cell(outcome: dict) -> str:
    detail = outcome.get("reason", "")
    kind = outcome["outcome"]
    if kind in ("failed", "oom") and outcome.get("error_type"):
        detail = f"{outcome['error_type']}: {detail}"
    return f"{kind}: {detail}".replace("|", "/") if detail else kind


def memory_measured(run: Run) -> bool:
    """Whether any case's memory was read from the machine (False for the tiny run on CPU)."""
    return any(row.memory_measured_bytes is not None for row in run.rows)


def memory_not_measured(run: Run) -> str:
    """Why no case's memory was measured, said once (`cells.not_measured`)."""
    return not_measured("Memory", [row.memory_source or "not recorded in this run" for row in run.rows])


def markdown_table(run: Run) -> str:
    versions = ", ".join(f"{name} {run.machine[name]}" for name in _LIBRARIES if run.machine.get(name))
    dpo = "\n".join(table for table in (dpo_table(run), train_table(run)) if table)
    if dpo and not run.rows and not run.outcomes:  # a DPO- or training-only run (pytest benchmarks -k dpo/train)
        return f"Device: {run.device}" + (f"; {versions}" if versions else "") + "\n\n" + dpo
    # Where nothing's memory was measured (the tiny run on CPU), the table is what was: latency.
    header, rule = (_HEADER, _RULE) if memory_measured(run) else (_LATENCY_HEADER, _LATENCY_RULE)
    lines = [f"Device: {run.device}" + (f"; {versions}" if versions else ""), "", header, rule]
    measured = {row.key for row in run.rows}
    missing = [
        o for o in run.outcomes
        if f"{o.get('checkpoint')}/{o.get('dtype')}/{o.get('quantization')}" not in measured
        and o.get("outcome") != "measured"
    ]
    routine = [o for o in missing if o.get("reason") == ROUTINE_SKIP]
    table_rows = [(_sort_key(row), row) for row in run.rows]
    table_rows += [((o["checkpoint"], o["dtype"], o["quantization"]), o) for o in missing if o not in routine]
    for _, item in sorted(table_rows, key=lambda pair: tuple(str(part) for part in pair[0])):
        if isinstance(item, dict):
            lines.append(
                f"| {item['checkpoint']} | {item['dtype']} | {item['quantization']} | {_outcome_cell(item)} "
                + "| n/a " * (header.count("|") - 5) + "|"
            )
            continue
        row = item
        if header == _LATENCY_HEADER:
            latency = f"{row.median_latency_s * 1000:.1f} ms"
            lines.append(f"| {row.checkpoint} | {row.dtype} | {row.quantization} | measured | {latency} |")
            continue
        lines.append(
            f"| {row.checkpoint} | {row.dtype} | {row.quantization} | measured | {row.median_latency_s * 1000:.1f} ms "
            f"| {format_bytes(row.peak_bytes)} | {format_bytes(row.resident_bytes)} "
            f"| {format_bytes(row.memory_measured_bytes)} | {format_bytes(row.memory_predicted_bytes)} "
            f"| {ratio(row.measured_over_predicted)} | {format_bytes(row.memory_peak_measured_bytes)} "
            f"| {format_bytes(row.memory_peak_predicted_bytes)} | {fraction(row.bandwidth_fraction)} |"
        )
    if run.outcomes:
        counts: dict[str, int] = {}
        for outcome in run.outcomes:
            counts[outcome.get("outcome", "?")] = counts.get(outcome.get("outcome", "?"), 0) + 1
        summary = ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))
        lines += ["", f"Outcomes: {summary}" + (f" ({len(routine)} skipped: {ROUTINE_SKIP})" if routine else "")]
    if header == _LATENCY_HEADER and run.rows:
        lines += ["", memory_not_measured(run)]
    estimators = estimator_table(run)
    return "\n".join(lines) + "\n" + ("\n" + estimators if estimators else "") + ("\n" + dpo if dpo else "")


def write_chart(run: Run, path) -> Path:
    """The chart of `chart_figure`, as a PNG file."""
    import matplotlib.pyplot as plt

    figure = chart_figure(run)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def chart_figure(run: Run):
    """Where memory was measured: median latency against the measured peak memory, one mark per
    case (colour: quantization, shape: checkpoint), and below it each estimator's percent off the
    measured resident memory. Where it was not (the tiny run on CPU): median latency per case, and
    why memory is not there (`memory_not_measured`), rather than a memory axis of process noise."""
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window: this runs on CI runners without a display
    import matplotlib.pyplot as plt

    quantizations = sorted({row.quantization for row in run.rows})
    checkpoints = sorted({row.checkpoint for row in run.rows})
    markers = "os^DvP*Xh"
    colours = plt.get_cmap("tab10")
    if not memory_measured(run):
        return _latency_figure(run, quantizations, colours)
    estimated = [r for r in sorted(run.rows, key=_sort_key) if r.memory_measured_bytes and r.memory_estimates]
    if estimated:
        figure, (axes, errors) = plt.subplots(2, 1, figsize=(9, 10), gridspec_kw={"height_ratios": [1, 1]})
        _estimator_panel(errors, estimated, colours, markers)
    else:
        figure, axes = plt.subplots(figsize=(8, 5.5))
    for row in run.rows:
        if row.memory_peak_measured_bytes is None:
            continue
        axes.scatter(
            row.memory_peak_measured_bytes / 1024**2, row.median_latency_s * 1000,
            color=colours(quantizations.index(row.quantization) % 10),
            marker=markers[checkpoints.index(row.checkpoint) % len(markers)], alpha=0.8,
        )
    # Legend entries without points: one per colour and one per shape, rather than one per case.
    for index, quantization in enumerate(quantizations):
        axes.scatter([], [], color=colours(index % 10), marker="o", label=quantization)
    for index, checkpoint in enumerate(checkpoints):
        axes.scatter([], [], color="grey", marker=markers[index % len(markers)], label=checkpoint)
    axes.set_xlabel("measured peak memory of the load (MiB)")
    axes.set_ylabel("median load latency (ms)")
    axes.set_title(f"load_policy: latency vs memory ({run.device})", fontsize=10)
    axes.legend(fontsize=8, loc="best")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def _latency_figure(run: Run, quantizations: list[str], colours):
    """Median latency per case, one bar each (colour: quantization), grouped by checkpoint and dtype."""
    import textwrap

    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = sorted(run.rows, key=_sort_key, reverse=True)  # barh draws bottom-up: the first case on top
    figure, axes = plt.subplots(figsize=(9, 2.2 + 0.22 * len(rows)))
    axes.barh(
        range(len(rows)), [row.median_latency_s * 1000 for row in rows],
        color=[colours(quantizations.index(row.quantization) % 10) for row in rows],
    )
    axes.set_yticks(range(len(rows)))
    axes.set_yticklabels([f"{row.checkpoint} {row.dtype} {row.quantization}" for row in rows], fontsize=7)
    handles = [Patch(color=colours(index % 10), label=name) for index, name in enumerate(quantizations)]
    axes.set_xlabel("median load latency (ms)")
    axes.set_title(f"load_policy: latency per dtype x quantization ({run.device})", fontsize=10)
    axes.legend(handles=handles, fontsize=8, loc="lower right")
    axes.grid(alpha=0.3, axis="x")
    note = textwrap.fill(memory_not_measured(run), 120)
    figure.text(0.01, 0.005, note, fontsize=7, va="bottom", ha="left")
    figure.tight_layout(rect=(0, 0.03 + 0.012 * note.count("\n"), 1, 1))
    return figure


def _estimator_panel(axes, rows, colours, markers) -> None:
    """Percent off the measured resident memory, per estimator (colour), per case (x)."""
    names = list(dict.fromkeys(name for row in rows for name in row.memory_estimates))
    for index, name in enumerate(names):
        points = [
            (x, (row.memory_estimates[name] / row.memory_measured_bytes - 1) * 100)
            for x, row in enumerate(rows) if row.memory_estimates.get(name) is not None
        ]
        if points:
            xs, ys = [x for x, _ in points], [y for _, y in points]
            axes.scatter(xs, ys, color=colours(index % 10), marker=markers[index % len(markers)], label=name)
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(rows)))
    axes.set_xticklabels([f"{r.checkpoint} {r.dtype} {r.quantization}" for r in rows], rotation=60, ha="right",
                         fontsize=7)
    axes.set_ylabel("estimate vs measured resident (% off)")
    axes.set_title("memory estimators against the measurement", fontsize=10)
    axes.legend(fontsize=8, loc="best")
    axes.grid(alpha=0.3)
