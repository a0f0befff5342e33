"""How much the gated metrics move between runs of unchanged code: `python -m policyload.report noise`.

A threshold of `compare` is only useful above this noise: below it, an unchanged code base fails
the gate at random. The metrics measured are `gate.GATED_METRICS`, the very list `compare_runs`
gates on, so a threshold is always set against the noise of the metric it gates. Its own module
because it reads several runs and gates nothing: `gate` compares two runs, this only describes.
"""

from __future__ import annotations

import math

from .gate import GATED_METRICS
from .runs import ReportError, Run


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
    by_key = [run.rows_by_key() for run in runs]
    keys = sorted(set.intersection(*(set(rows) for rows in by_key)))
    if not keys:
        raise ReportError("no case is in every run")
    sources = {rows[key].latency_source for rows in by_key for key in keys}
    if len(sources) > 1:
        raise ReportError(
            "refusing to measure latency noise across runs with different latency sources "
            f"({' and '.join(sorted(sources))}): some files lack extra_info.median_latency_s"
        )
    spreads: dict[str, dict[str, float]] = {metric.label: {} for metric in GATED_METRICS}
    for key in keys:
        for metric in GATED_METRICS:
            values = [getattr(rows[key], metric.field) for rows in by_key]
            if all(value is not None and value > 0 for value in values):
                spreads[metric.label][key] = max(values) / min(values) - 1
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
    labels = [metric.label for metric in GATED_METRICS]
    lines += ["", "| case | " + " | ".join(labels) + " |", "|---" + "|---:" * len(labels) + "|"]
    for key in keys:
        cells = [f"{spreads[label][key]:.1%}" if key in spreads[label] else "n/a" for label in labels]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
