"""The regression gate of the nightly benchmark: which metrics `compare` checks and how.

The metrics are listed once, in `GATED_METRICS`: `compare_runs` gates on them and `noise_table`
(`noise`) measures them, so a threshold is always set against the noise of the metric it gates.
The allowances themselves come from `thresholds`. The latency is the LatencyTracker's median of
the load (`runs`: extra_info.median_latency_s), not pytest-benchmark's timing of the whole
benchmark call with the trackers' own bookkeeping.

`compare_runs` is a gate that a run cannot pass by losing its data. Besides regressions it fails
(the CLI exits 1) on what the new run lost: a base case missing from the new run (a case that now
skips or fails is missing too), a gated metric the base has for a case and the new run does not
(absent, null, not a number; a tracker latency replaced by stats.median), and no case in common.
An intended removal is accepted by name or glob (`accept_removed`) and then shown as a note. It
refuses to compare at all (ReportError, exit 2) where the comparison would mean nothing: runs
from different devices, a case key twice in one run, an empty base, a quick run against a full
one, a case measured with different rounds or warm-up rounds, a base latency from stats.median
against a new one from the tracker.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from .cells import format_bytes
from .runs import STATS_LATENCY, TRACKER_LATENCY, ReportError, Row, Run


class Metric(NamedTuple):
    """A Row field the gate checks. Its kind picks compare's allowance: a latency has the latency
    allowance and the latency floor and is shown in ms, a memory figure the memory allowance, in bytes."""

    label: str
    field: str
    kind: Literal["latency", "memory"]

    def shown(self, old, new) -> str:
        if self.kind == "latency":
            return f"{old * 1000:.2f} ms -> {new * 1000:.2f} ms"
        return f"{format_bytes(old)} -> {format_bytes(new)}"


#: Every metric `compare` gates on, in the order it reports them; `noise` measures the same ones.
GATED_METRICS = (
    Metric("median latency", "median_latency_s", "latency"),
    Metric("peak memory", "peak_bytes", "memory"),
    Metric("resident memory", "resident_bytes", "memory"),
)


def _rounds(row: Row) -> str:
    if row.rounds is None and row.warmup_rounds is None:
        return "rounds not recorded"
    return f"{row.rounds} round(s) after {row.warmup_rounds} warm-up"


@dataclass
class Comparison:
    """What `compare_runs` found, one line per case in each list.

    The gate fails (exit 1: the new run lost data or got worse) when any of `missing_cases`,
    `missing_metrics`, `regressions` is not empty, or when no case is in both runs (`common`).
    """

    common: list[str] = field(default_factory=list)
    #: Base cases absent from the new run (skipped, failed, renamed or removed) and not accepted.
    missing_cases: list[str] = field(default_factory=list)
    #: "case: metric, metric": gated metrics the base has for a case and the new run does not.
    missing_metrics: list[str] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.missing_cases or self.missing_metrics or self.regressions or not self.common)


def compare_runs(
    base: Run, new: Run, max_latency_regression: float, max_memory_regression: float, allow_different_devices=False,
    latency_floor_s: float = 0.0, accept_removed: Sequence[str] = (),
) -> Comparison:
    """Check `new` against `base`: what it lost, and each case and metric that grew beyond its allowance.

    A latency counts only when it grew by more than `max_latency_regression` and by more than
    `latency_floor_s` seconds as well (short loads jitter by milliseconds, a large percentage).
    `accept_removed`: case keys or globs (`qwen2/*`) of base cases whose absence is intended.

    Raises ReportError (exit 2: the comparison would mean nothing) on runs from different devices
    (unless `allow_different_devices`), a case key twice in one run, an empty base, a quick run
    against a full one, a case measured with different rounds or warm-up rounds, or a base latency
    from pytest-benchmark's stats.median against a new one from the tracker.
    """
    if base.device != new.device and not allow_different_devices:
        raise ReportError(
            f"refusing to compare runs from different devices: {base.path} on {base.device!r}, "
            f"{new.path} on {new.device!r} (pass --allow-different-devices to compare anyway)"
        )
    base_rows, new_rows = base.rows_by_key(), new.rows_by_key()
    if not base_rows:
        raise ReportError(f"{base.path}: the base has no benchmarks: nothing to gate against")
    if base.quick != new.quick:
        raise ReportError(
            f"refusing to compare runs with different quick settings: {base.path} quick={base.quick}, "
            f"{new.path} quick={new.quick} (--quick measures 1 round without warm-up)"
        )
    common = sorted(base_rows.keys() & new_rows.keys())
    different_rounds: dict[tuple[str, str], list[str]] = {}
    for key in common:
        settings = (_rounds(base_rows[key]), _rounds(new_rows[key]))
        if settings[0] != settings[1]:
            different_rounds.setdefault(settings, []).append(key)
    if different_rounds:
        raise ReportError(
            "refusing to compare cases measured with different rounds: "
            + "; ".join(
                f"base {old}, new {current} in {len(keys)} case(s): {', '.join(keys)}"
                for (old, current), keys in sorted(different_rounds.items())
            )
        )
    older_latency = [
        key for key in common
        if base_rows[key].latency_source == STATS_LATENCY and new_rows[key].latency_source == TRACKER_LATENCY
    ]
    if older_latency:
        raise ReportError(
            f"refusing to compare latencies measured differently: {base.path} has only pytest-benchmark's "
            f"stats.median (which includes the trackers' overhead) where {new.path} has the tracker's "
            f"extra_info.median_latency_s, in {len(older_latency)} case(s): {', '.join(older_latency)} "
            "(re-record the base with the current benchmarks)"
        )

    result = Comparison(common=common)
    for key in sorted(base_rows.keys() - new_rows.keys()):
        patterns = [pattern for pattern in accept_removed if fnmatch.fnmatchcase(key, pattern)]
        if patterns:
            result.notes.append(f"{key}: only in base, removal accepted (--accept-removed {patterns[0]!r})")
        else:
            result.missing_cases.append(key)
    for pattern in accept_removed:
        if not any(fnmatch.fnmatchcase(key, pattern) for key in base_rows.keys() - new_rows.keys()):
            result.notes.append(f"--accept-removed {pattern!r} matches no case missing from the new run")
    for key in sorted(new_rows.keys() - base_rows.keys()):
        result.notes.append(f"{key}: only in new")

    allowances = {"latency": max_latency_regression, "memory": max_memory_regression}
    not_in_base: dict[str, list[str]] = {}
    for key in common:
        old_row, new_row = base_rows[key], new_rows[key]
        lost = []
        for metric in GATED_METRICS:
            old, current = getattr(old_row, metric.field), getattr(new_row, metric.field)
            if old is None:
                not_in_base.setdefault(metric.label, []).append(key)
                continue
            if metric.kind == "latency" and old_row.latency_source != new_row.latency_source:
                # The base has the tracker's latency, the new run only stats.median: the measurement is lost.
                lost.append(f"{metric.label} (the new run has only pytest-benchmark's stats.median)")
                continue
            if current is None:
                lost.append(metric.label)
                continue
            if old <= 0:
                continue
            change, allowance, latency = current / old - 1, allowances[metric.kind], metric.kind == "latency"
            if change > allowance and (not latency or current - old > latency_floor_s):
                floor = f" and +{latency_floor_s * 1000:.1f} ms" if latency and latency_floor_s else ""
                shown = metric.shown(old, current)
                result.regressions.append(
                    f"{key}: {metric.label} +{change:.1%} ({shown}; allowed +{allowance:.1%}{floor})"
                )
        if lost:
            result.missing_metrics.append(f"{key}: {', '.join(lost)}")
    for label, keys in not_in_base.items():
        result.notes.append(f"{label}: not in the base for {len(keys)} case(s), not gated there: {', '.join(keys)}")
    stats_only = [
        key for key in common if base_rows[key].latency_source == new_rows[key].latency_source == STATS_LATENCY
    ]
    if stats_only:
        result.notes.append(
            f"median latency of {len(stats_only)} case(s) is pytest-benchmark's stats.median in both runs (files "
            "without extra_info.median_latency_s): it includes the trackers' overhead"
        )
    return result
