"""What a person reads of a run: its cells formatted, a markdown table and a chart.

matplotlib is imported inside `write_chart` only: `compare`, `device` and `noise` run where the
`bench` extra (which brings matplotlib) may be missing, and the import costs a second.
"""

from __future__ import annotations

from pathlib import Path

from .runs import Run

#: Versions named in the table's heading line, in this order, when the run recorded them.
_LIBRARIES = ("torch", "transformers", "trl", "bitsandbytes", "accelerate", "peft")
_HEADER = (
    "| checkpoint | dtype | quantization | outcome | median latency | peak RSS | resident RSS "
    "| measured resident | predicted resident | measured/predicted | measured peak | predicted peak "
    "| bandwidth fraction |"
)
#: A skip every run without --realsize has, collapsed into one line rather than a row per case.
_ROUTINE_SKIP = "real-size case: run with --realsize"


def format_bytes(value) -> str:
    if value is None:
        return "n/a"
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"


def _ratio(value, digits=3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _fraction(value) -> str:
    """A share of the bandwidth; one under 0.1% in scientific notation, where a percentage would show 0.0%."""
    return "n/a" if value is None else f"{value:.2e}" if value < 0.001 else f"{value:.1%}"


def _percent_off(value, measured) -> str:
    if value is None or not measured:
        return "n/a"
    return f"{format_bytes(value)} ({value / measured - 1:+.1%})"


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
        cells = [_percent_off(row.memory_estimates.get(name), row.memory_measured_bytes) for name in names]
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


def markdown_table(run: Run) -> str:
    versions = ", ".join(f"{name} {run.machine[name]}" for name in _LIBRARIES if run.machine.get(name))
    from .dpo import dpo_table  # report.dpo and report.train format with this module's helpers
    from .train import train_table

    dpo = "\n".join(table for table in (dpo_table(run), train_table(run)) if table)
    if dpo and not run.rows and not run.outcomes:  # a DPO- or training-only run (pytest benchmarks -k dpo/train)
        return f"Device: {run.device}" + (f"; {versions}" if versions else "") + "\n\n" + dpo
    lines = [
        f"Device: {run.device}" + (f"; {versions}" if versions else ""),
        "",
        _HEADER,
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    measured = {row.key for row in run.rows}
    missing = [
        o for o in run.outcomes
        if f"{o.get('checkpoint')}/{o.get('dtype')}/{o.get('quantization')}" not in measured
        and o.get("outcome") != "measured"
    ]
    routine = [o for o in missing if o.get("reason") == _ROUTINE_SKIP]
    table_rows = [(_sort_key(row), row) for row in run.rows]
    table_rows += [((o["checkpoint"], o["dtype"], o["quantization"]), o) for o in missing if o not in routine]
    for _, item in sorted(table_rows, key=lambda pair: tuple(str(part) for part in pair[0])):
        if isinstance(item, dict):
            lines.append(
                f"| {item['checkpoint']} | {item['dtype']} | {item['quantization']} | {_outcome_cell(item)} "
                + "| n/a " * 9 + "|"
            )
            continue
        row = item
        lines.append(
            f"| {row.checkpoint} | {row.dtype} | {row.quantization} | measured | {row.median_latency_s * 1000:.1f} ms "
            f"| {format_bytes(row.peak_bytes)} | {format_bytes(row.resident_bytes)} "
            f"| {format_bytes(row.memory_measured_bytes)} | {format_bytes(row.memory_predicted_bytes)} "
            f"| {_ratio(row.measured_over_predicted)} | {format_bytes(row.memory_peak_measured_bytes)} "
            f"| {format_bytes(row.memory_peak_predicted_bytes)} | {_fraction(row.bandwidth_fraction)} |"
        )
    if run.outcomes:
        counts: dict[str, int] = {}
        for outcome in run.outcomes:
            counts[outcome.get("outcome", "?")] = counts.get(outcome.get("outcome", "?"), 0) + 1
        summary = ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))
        lines += ["", f"Outcomes: {summary}" + (f" ({len(routine)} skipped: {_ROUTINE_SKIP})" if routine else "")]
    estimators = estimator_table(run)
    return "\n".join(lines) + "\n" + ("\n" + estimators if estimators else "") + ("\n" + dpo if dpo else "")


def write_chart(run: Run, path) -> Path:
    """Median latency against peak memory, one mark per case (colour: quantization, shape: checkpoint);
    below it, where memory was measured, each estimator's percent off the measured resident memory."""
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window: this runs on CI runners without a display
    import matplotlib.pyplot as plt

    quantizations = sorted({row.quantization for row in run.rows})
    checkpoints = sorted({row.checkpoint for row in run.rows})
    markers = "os^DvP*Xh"
    colours = plt.get_cmap("tab10")
    estimated = [r for r in sorted(run.rows, key=_sort_key) if r.memory_measured_bytes and r.memory_estimates]
    if estimated:
        figure, (axes, errors) = plt.subplots(2, 1, figsize=(9, 10), gridspec_kw={"height_ratios": [1, 1]})
        _estimator_panel(errors, estimated, colours, markers)
    else:
        figure, axes = plt.subplots(figsize=(8, 5.5))
    for row in run.rows:
        axes.scatter(
            (row.memory_peak_measured_bytes or row.peak_bytes or 0) / 1024**2, row.median_latency_s * 1000,
            color=colours(quantizations.index(row.quantization) % 10),
            marker=markers[checkpoints.index(row.checkpoint) % len(markers)], alpha=0.8,
        )
    # Legend entries without points: one per colour and one per shape, rather than one per case.
    for index, quantization in enumerate(quantizations):
        axes.scatter([], [], color=colours(index % 10), marker="o", label=quantization)
    for index, checkpoint in enumerate(checkpoints):
        axes.scatter([], [], color="grey", marker=markers[index % len(markers)], label=checkpoint)
    axes.set_xlabel("peak memory of the load (MiB): the measured peak where measurable, else peak RSS growth")
    axes.set_ylabel("median load latency (ms)")
    axes.set_title(f"load_policy: latency vs memory ({run.device})", fontsize=10)
    axes.legend(fontsize=8, loc="best")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


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
