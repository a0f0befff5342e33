"""Read a `pytest benchmarks --benchmark-json` file: a markdown table, a chart, a comparison.

    python -m policyload.report out/bench.json [--markdown out/bench.md] [--chart out/bench.png]
    python -m policyload.report compare base.json new.json \
        [--max-latency-regression 15%] [--max-memory-regression 2%] [--allow-different-devices]

Exit codes: 0 fine, 1 a regression, 2 unusable input (missing, malformed or truncated JSON,
runs from different devices). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path


class ReportError(Exception):
    """Input the report cannot use; the message is the whole one-line explanation."""


@dataclass(frozen=True)
class Row:
    checkpoint: str
    dtype: str
    quantization: str
    median_latency_s: float
    peak_bytes: int | None
    resident_bytes: int | None
    predicted_bytes: int | None
    measured_over_predicted: float | None
    bandwidth_fraction: float | None

    @property
    def key(self) -> str:
        return f"{self.checkpoint}/{self.dtype}/{self.quantization}"


@dataclass(frozen=True)
class Run:
    path: Path
    device: str
    machine: dict
    rows: list[Row]


def load_run(path) -> Run:
    """Parse a pytest-benchmark JSON file written by `pytest benchmarks`."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ReportError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportError(
            f"{path}: not valid JSON (truncated or malformed) at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("benchmarks"), list):
        raise ReportError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    machine = document.get("machine_info", {}).get("policyload", {})
    rows = []
    for index, benchmark in enumerate(document["benchmarks"]):
        try:
            extra = benchmark.get("extra_info", {})
            rows.append(
                Row(
                    checkpoint=extra.get("checkpoint", benchmark["name"]),
                    dtype=extra.get("dtype", "?"),
                    quantization=extra.get("quantization", "?"),
                    median_latency_s=float(benchmark["stats"]["median"]),
                    peak_bytes=extra.get("peak_bytes"),
                    resident_bytes=extra.get("resident_bytes"),
                    predicted_bytes=extra.get("predicted_bytes"),
                    measured_over_predicted=extra.get("measured_over_predicted"),
                    bandwidth_fraction=extra.get("bandwidth_fraction"),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ReportError(f"{path}: benchmark #{index} has no usable stats.median ({error!r})") from None
    return Run(path, machine.get("device") or document.get("machine_info", {}).get("cpu", {}).get("brand_raw", "unknown"), machine, rows)


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
    return "n/a" if value is None else f"{value:.2e}" if value < 0.001 else f"{value:.1%}"


def markdown_table(run: Run) -> str:
    versions = ", ".join(
        f"{name} {run.machine[name]}" for name in ("torch", "transformers", "trl", "bitsandbytes", "accelerate")
        if run.machine.get(name)
    )
    lines = [
        f"Device: {run.device}" + (f"; {versions}" if versions else ""),
        "",
        "| checkpoint | dtype | quantization | median latency | peak memory | resident memory | predicted | measured/predicted | bandwidth fraction |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(run.rows, key=lambda r: (r.checkpoint, r.dtype, r.quantization)):
        lines.append(
            f"| {row.checkpoint} | {row.dtype} | {row.quantization} | {row.median_latency_s * 1000:.1f} ms "
            f"| {format_bytes(row.peak_bytes)} | {format_bytes(row.resident_bytes)} | {format_bytes(row.predicted_bytes)} "
            f"| {_ratio(row.measured_over_predicted)} | {_fraction(row.bandwidth_fraction)} |"
        )
    return "\n".join(lines) + "\n"


def write_chart(run: Run, path) -> Path:
    """Median latency against peak memory, one mark per case (colour: quantization, shape: checkpoint)."""
    import matplotlib

    matplotlib.use("Agg")
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


def parse_percent(text: str) -> float:
    """'15%' or '15' -> 0.15."""
    try:
        value = float(text.strip().removesuffix("%")) / 100
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage; accepted: e.g. '15%' or '15'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; accepted: a percentage >= 0")
    return value


def compare_runs(
    base: Run, new: Run, max_latency_regression: float, max_memory_regression: float, allow_different_devices=False
) -> tuple[list[str], list[str]]:
    """(regressions, notes): one line per case and metric that grew beyond its allowance."""
    if base.device != new.device and not allow_different_devices:
        raise ReportError(
            f"refusing to compare runs from different devices: {base.path} on {base.device!r}, "
            f"{new.path} on {new.device!r} (pass --allow-different-devices to compare anyway)"
        )
    base_rows = {row.key: row for row in base.rows}
    new_rows = {row.key: row for row in new.rows}
    regressions, notes = [], []
    for key in sorted(base_rows.keys() - new_rows.keys()):
        notes.append(f"{key}: only in base")
    for key in sorted(new_rows.keys() - base_rows.keys()):
        notes.append(f"{key}: only in new")
    for key in sorted(base_rows.keys() & new_rows.keys()):
        before, after = base_rows[key], new_rows[key]
        checks = [("median latency", before.median_latency_s, after.median_latency_s, max_latency_regression, "s")]
        checks += [
            (label, getattr(before, field), getattr(after, field), max_memory_regression, "bytes")
            for label, field in (("peak memory", "peak_bytes"), ("resident memory", "resident_bytes"))
        ]
        for label, old, current, allowance, unit in checks:
            if old is None or current is None or old <= 0:
                continue
            change = current / old - 1
            if change > allowance:
                shown = (
                    (f"{old * 1000:.2f} ms -> {current * 1000:.2f} ms")
                    if unit == "s" else f"{format_bytes(old)} -> {format_bytes(current)}"
                )
                regressions.append(f"{key}: {label} +{change:.1%} ({shown}; allowed +{allowance:.1%})")
    return regressions, notes


def _report_main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m policyload.report", description="Markdown table and chart of a benchmark run.")
    parser.add_argument("json", help="pytest-benchmark JSON written by `pytest benchmarks --benchmark-json`")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table to PATH")
    parser.add_argument("--chart", metavar="PATH", help="chart PNG (default: the JSON path with .png)")
    args = parser.parse_args(argv)
    run = load_run(args.json)
    if not run.rows:
        raise ReportError(f"{args.json}: no benchmarks in the file (did every case skip or fail?)")
    table = markdown_table(run)
    print(table, end="")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table)
    chart = write_chart(run, args.chart or Path(args.json).with_suffix(".png"))
    print(f"\nchart: {chart}")
    return 0


def _compare_main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m policyload.report compare", description="Fail on regressions between two runs.")
    parser.add_argument("base")
    parser.add_argument("new")
    parser.add_argument("--max-latency-regression", type=parse_percent, default=parse_percent("15%"), metavar="PCT")
    parser.add_argument("--max-memory-regression", type=parse_percent, default=parse_percent("2%"), metavar="PCT")
    parser.add_argument("--allow-different-devices", action="store_true")
    args = parser.parse_args(argv)
    base, new = load_run(args.base), load_run(args.new)
    regressions, notes = compare_runs(
        base, new, args.max_latency_regression, args.max_memory_regression, args.allow_different_devices
    )
    for note in notes:
        print(f"note: {note}")
    if regressions:
        print(f"{len(regressions)} regression(s):")
        for line in regressions:
            print(f"  {line}")
        return 1
    print(f"no regression in {len({r.key for r in base.rows} & {r.key for r in new.rows})} common case(s)")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["compare"]:
            return _compare_main(argv[1:])
        return _report_main(argv)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`: not an error of the report
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
