"""What a person reads of a run: its cells formatted, a markdown table and a chart.

matplotlib is imported inside `write_chart` only: `compare`, `device` and `noise` run where the
`bench` extra (which brings matplotlib) may be missing, and the import costs a second.
"""

from __future__ import annotations

from pathlib import Path

from .runs import Run

#: Versions named in the table's heading line, in this order, when the run recorded them.
_LIBRARIES = ("torch", "transformers", "trl", "bitsandbytes", "accelerate")
_HEADER = (
    "| checkpoint | dtype | quantization | median latency | peak memory | resident memory | predicted "
    "| measured/predicted | bandwidth fraction |"
)


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


def markdown_table(run: Run) -> str:
    versions = ", ".join(f"{name} {run.machine[name]}" for name in _LIBRARIES if run.machine.get(name))
    lines = [
        f"Device: {run.device}" + (f"; {versions}" if versions else ""),
        "",
        _HEADER,
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(run.rows, key=lambda r: (r.checkpoint, r.dtype, r.quantization)):
        lines.append(
            f"| {row.checkpoint} | {row.dtype} | {row.quantization} | {row.median_latency_s * 1000:.1f} ms "
            f"| {format_bytes(row.peak_bytes)} | {format_bytes(row.resident_bytes)} "
            f"| {format_bytes(row.predicted_bytes)} "
            f"| {_ratio(row.measured_over_predicted)} | {_fraction(row.bandwidth_fraction)} |"
        )
    return "\n".join(lines) + "\n"


def write_chart(run: Run, path) -> Path:
    """Median latency against peak memory, one mark per case (colour: quantization, shape: checkpoint)."""
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window: this runs on CI runners without a display
    import matplotlib.pyplot as plt

    quantizations = sorted({row.quantization for row in run.rows})
    checkpoints = sorted({row.checkpoint for row in run.rows})
    markers = "os^DvP*Xh"
    colours = plt.get_cmap("tab10")
    figure, axes = plt.subplots(figsize=(8, 5.5))
    for row in run.rows:
        axes.scatter(
            (row.peak_bytes or 0) / 1024**2, row.median_latency_s * 1000,
            color=colours(quantizations.index(row.quantization) % 10),
            marker=markers[checkpoints.index(row.checkpoint) % len(markers)], alpha=0.8,
        )
    # Legend entries without points: one per colour and one per shape, rather than one per case.
    for index, quantization in enumerate(quantizations):
        axes.scatter([], [], color=colours(index % 10), marker="o", label=quantization)
    for index, checkpoint in enumerate(checkpoints):
        axes.scatter([], [], color="grey", marker=markers[index % len(markers)], label=checkpoint)
    axes.set_xlabel("peak memory of the load (MiB)")
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
