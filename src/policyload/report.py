"""Read a `pytest benchmarks --benchmark-json` file: a markdown table, a chart, a comparison.

    python -m policyload.report out/bench.json [--markdown out/bench.md] [--chart out/bench.png]
    python -m policyload.report compare base.json new.json [--thresholds benchmarks/thresholds.toml] \
        [--max-latency-regression 15%] [--max-memory-regression 2%] [--latency-floor-ms 0] [--allow-different-devices]
    python -m policyload.report device new.json          the run's device as a folder name: nvidia-h200
    python -m policyload.report noise run1.json run2.json ...   run-to-run spread of each case's medians

Thresholds come from, in order of precedence: the command line flags, the `--thresholds` TOML
file (keys `max_latency_regression`, `max_memory_regression`, `latency_floor_ms`), the defaults
15%, 2% and 0 ms. A latency growth is a regression when it exceeds the percentage and, as well,
the floor in milliseconds (short loads jitter by milliseconds, which is a large percentage).

Exit codes: 0 fine, 1 a regression, 2 unusable input (missing, malformed or truncated JSON,
runs from different devices). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
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
    """Parse a pytest-benchmark JSON file written by `pytest benchmarks` (gzipped when it ends in .gz)."""
    path = Path(path)
    try:
        # .json.gz: recorded runs kept in the repository (benchmarks/baselines/) are gzipped.
        text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    except (OSError, EOFError) as error:
        raise ReportError(f"{path}: cannot read ({getattr(error, 'strerror', None) or error})") from None
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


#: compare's allowances when neither a thresholds file nor a flag sets them (fractions; seconds).
DEFAULT_THRESHOLDS = {"max_latency_regression": 0.15, "max_memory_regression": 0.02, "latency_floor_s": 0.0}
#: thresholds-file key -> (DEFAULT_THRESHOLDS key, how the file writes it, parser).
THRESHOLD_KEYS = {
    "max_latency_regression": ("max_latency_regression", 'a percentage string such as "15%"', "percent"),
    "max_memory_regression": ("max_memory_regression", 'a percentage string such as "2%"', "percent"),
    "latency_floor_ms": ("latency_floor_s", "a number of milliseconds >= 0 such as 50", "ms"),
}


def load_thresholds(path) -> dict[str, float]:
    """The allowances of a thresholds TOML file: {"max_latency_regression": 0.15, "latency_floor_s": 0.05, ...}.

    Each key is optional. Percentages are strings, "15%" (a bare number is refused: 0.15 would
    read as 0.15% to one reader and 15% to another); `latency_floor_ms` is a number. An unknown
    key or a bad value is refused, naming the file, the key and what is accepted.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except OSError as error:
        raise ReportError(f"{path}: cannot read ({error.strerror or error})") from None
    except tomllib.TOMLDecodeError as error:
        raise ReportError(f"{path}: not valid TOML ({error})") from None
    unknown = sorted(document.keys() - THRESHOLD_KEYS.keys())
    if unknown:
        raise ReportError(f"{path}: unknown key(s) {unknown}; accepted: {sorted(THRESHOLD_KEYS)}")
    thresholds = {}
    for key, value in document.items():
        field, accepted, kind = THRESHOLD_KEYS[key]
        if kind == "percent" and isinstance(value, str) and value.strip().endswith("%"):
            try:
                thresholds[field] = parse_percent(value)
            except argparse.ArgumentTypeError as error:
                raise ReportError(f"{path}: {key}: {error}") from None
        elif kind == "ms" and isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            thresholds[field] = value / 1000
        else:
            raise ReportError(f"{path}: {key} = {value!r} is not accepted; accepted: {accepted}")
    return thresholds


def device_folder_name(device: str) -> str:
    """A run's device as a folder name ('NVIDIA H200' -> 'nvidia-h200'): benchmarks/baselines/<it>/."""
    return re.sub(r"[^a-z0-9._]+", "-", device.lower()).strip("-") or "unknown"


def compare_runs(
    base: Run, new: Run, max_latency_regression: float, max_memory_regression: float, allow_different_devices=False,
    latency_floor_s: float = 0.0,
) -> tuple[list[str], list[str]]:
    """(regressions, notes): one line per case and metric that grew beyond its allowance.

    A latency counts only when it grew by more than `max_latency_regression` and by more than
    `latency_floor_s` seconds as well.
    """
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
            if change > allowance and (unit != "s" or current - old > latency_floor_s):
                shown = (
                    (f"{old * 1000:.2f} ms -> {current * 1000:.2f} ms")
                    if unit == "s" else f"{format_bytes(old)} -> {format_bytes(current)}"
                )
                floor = f" and +{latency_floor_s * 1000:.1f} ms" if unit == "s" and latency_floor_s else ""
                regressions.append(f"{key}: {label} +{change:.1%} ({shown}; allowed +{allowance:.1%}{floor})")
    return regressions, notes


#: (label, Row field) of every metric `compare` gates on; `noise` measures the same ones.
GATED_METRICS = (("median latency", "median_latency_s"), ("peak memory", "peak_bytes"), ("resident memory", "resident_bytes"))


def nearest_rank(values: list[float], fraction: float) -> float:
    """The `fraction` quantile by nearest rank (no interpolation: always one of the values)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def noise_table(runs: list[Run]) -> str:
    """Markdown: per metric, the distribution over cases of the spread max/min - 1 of that case's
    value across repeated runs of the same benchmark (for latency, each value is already the median
    of the case's rounds, as `compare` sees it), then the spread of every case.

    This is what a threshold of `compare` has to stay above to be quiet on an unchanged code base.
    """
    if len(runs) < 2:
        raise ReportError(f"noise needs at least 2 runs of the same benchmark, got {len(runs)}")
    devices = {run.device for run in runs}
    if len(devices) > 1:
        raise ReportError(f"refusing to measure noise across different devices: {sorted(devices)}")
    keys = sorted(set.intersection(*({row.key for row in run.rows} for run in runs)))
    if not keys:
        raise ReportError("no case is in every run")
    by_key = [{row.key: row for row in run.rows} for run in runs]
    spreads: dict[str, dict[str, float]] = {label: {} for label, _ in GATED_METRICS}
    for key in keys:
        for label, field in GATED_METRICS:
            values = [getattr(rows[key], field) for rows in by_key]
            if all(value is not None and value > 0 for value in values):
                spreads[label][key] = max(values) / min(values) - 1
    lines = [
        f"Run-to-run spread (max/min - 1) of each case's value over {len(runs)} runs on {runs[0].device}; "
        f"{len(keys)} cases in every run.",
        "",
        "| metric | cases | median | p90 | max | worst case |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, per_case in spreads.items():
        if per_case:
            worst = max(per_case, key=per_case.get)
            values = list(per_case.values())
            lines.append(
                f"| {label} | {len(values)} | {nearest_rank(values, 0.5):.1%} | {nearest_rank(values, 0.9):.1%} "
                f"| {max(values):.1%} | {worst} |"
            )
    lines += ["", "| case | " + " | ".join(label for label, _ in GATED_METRICS) + " |", "|---" + "|---:" * len(GATED_METRICS) + "|"]
    for key in keys:
        cells = [f"{spreads[label][key]:.1%}" if key in spreads[label] else "n/a" for label, _ in GATED_METRICS]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _noise_main(argv) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m policyload.report noise",
        description="Run-to-run spread of each case's medians over repeated runs of the same benchmark.",
    )
    parser.add_argument("json", nargs="+", help="pytest-benchmark JSON files of the same benchmark on the same device")
    parser.add_argument("--markdown", metavar="PATH", help="also write the tables to PATH")
    args = parser.parse_args(argv)
    table = noise_table([load_run(path) for path in args.json])
    print(table, end="")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table)
    return 0


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
    parser.add_argument(
        "--thresholds", metavar="TOML",
        help="allowances from this file (max_latency_regression, max_memory_regression, latency_floor_ms); flags override it",
    )
    parser.add_argument("--max-latency-regression", type=parse_percent, metavar="PCT", help="default 15%%")
    parser.add_argument("--max-memory-regression", type=parse_percent, metavar="PCT", help="default 2%%")
    parser.add_argument(
        "--latency-floor-ms", type=float, metavar="MS", dest="latency_floor_s",
        help="a latency must also grow by more than this many milliseconds (default 0)",
    )
    parser.add_argument("--allow-different-devices", action="store_true")
    args = parser.parse_args(argv)
    thresholds = {**DEFAULT_THRESHOLDS, **(load_thresholds(args.thresholds) if args.thresholds else {})}
    if args.latency_floor_s is not None:
        args.latency_floor_s /= 1000
    for key in DEFAULT_THRESHOLDS:
        if getattr(args, key) is not None:
            thresholds[key] = getattr(args, key)
    base, new = load_run(args.base), load_run(args.new)
    regressions, notes = compare_runs(
        base, new, thresholds["max_latency_regression"], thresholds["max_memory_regression"], args.allow_different_devices,
        latency_floor_s=thresholds["latency_floor_s"],
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


def _device_main(argv) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m policyload.report device", description="Print a run's device as a folder name (nvidia-h200)."
    )
    parser.add_argument("json")
    args = parser.parse_args(argv)
    print(device_folder_name(load_run(args.json).device))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["compare"]:
            return _compare_main(argv[1:])
        if argv[:1] == ["device"]:
            return _device_main(argv[1:])
        if argv[:1] == ["noise"]:
            return _noise_main(argv[1:])
        return _report_main(argv)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`: not an error of the report
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
