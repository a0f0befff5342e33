"""Read a `pytest benchmarks --benchmark-json` file: a markdown table, a chart, a comparison.

    python -m policyload.report out/bench.json [--markdown out/bench.md] [--chart out/bench.png]
    python -m policyload.report compare base.json new.json [--thresholds benchmarks/thresholds.toml] \
        [--max-latency-regression 15%] [--max-memory-regression 2%] [--latency-floor-ms 0] [--allow-different-devices] \
        [--accept-removed CASE_KEY_OR_GLOB ...]
    python -m policyload.report device new.json          the run's device as a folder name: nvidia-h200
    python -m policyload.report noise run1.json run2.json ...   run-to-run spread of each case's medians

Thresholds come from, in order of precedence: the command line flags, the `--thresholds` TOML
file (keys `max_latency_regression`, `max_memory_regression`, `latency_floor_ms`), the defaults
15%, 2% and 0 ms. A latency growth is a regression when it exceeds the percentage and, as well,
the floor in milliseconds (short loads jitter by milliseconds, which is a large percentage).

Latency is the benchmark's own measurement of the load: the LatencyTracker's median over the
measured rounds (`extra_info["median_latency_s"]`), which leaves out the other trackers'
bookkeeping (NVML init and shutdown, allocator synchronizations) that pytest-benchmark's
`stats.median` of the whole benchmark call includes. stats.median is read only from a file that
lacks median_latency_s; `Row.latency_source` says which. `compare` refuses (exit 2) a base
latency from stats.median against a new one from the tracker, treats a new run that has only
stats.median where the base has the tracker's latency as a lost metric (exit 1), and compares two
stats.median latencies with a note.

Exit codes of `compare`: 0 no regression and nothing lost. 1 a regression, or the new run lost
data: a base case missing from the new run (a case that now skips or fails is missing; an
intended removal passes with `--accept-removed KEY_OR_GLOB`, printed as a note), a gated metric
the base has for a case missing from the new run (absent, null or not a number), no case in
common. 2 unusable input, a comparison that would mean nothing: missing, malformed or truncated
JSON, runs from different devices (unless `--allow-different-devices`), a case key twice in one
run, an empty base, a quick run against a full one (`machine_info.policyload.quick`), a case
measured with different rounds or warm-up rounds (`extra_info`), mixed latency sources as
above. Every other command: 0 fine, 2 unusable input. Errors are one line on stderr, never a
traceback; what the new run lost is named case by case on stdout, like the regressions.

The modules, one job each: `runs` reads a run, `tables` formats it (markdown, chart),
`thresholds` holds compare's allowances (file, flags, defaults), `gate` the regression check,
`noise` the run-to-run spread of the gated metrics, `cli` the command line.
The names below are re-exported so that `from policyload.report import ...` keeps working.
None of this imports torch or transformers: the command starts in well under a second.
"""

from .cli import main
from .gate import GATED_METRICS, Comparison, Metric, compare_runs
from .noise import nearest_rank, noise_table
from .runs import STATS_LATENCY, TRACKER_LATENCY, ReportError, Row, Run, device_folder_name, load_run
from .tables import format_bytes, markdown_table, write_chart
from .thresholds import DEFAULT_THRESHOLDS, THRESHOLD_KEYS, load_thresholds, parse_percent, resolve_thresholds

__all__ = [
    "DEFAULT_THRESHOLDS",
    "GATED_METRICS",
    "THRESHOLD_KEYS",
    "Comparison",
    "Metric",
    "ReportError",
    "Row",
    "Run",
    "STATS_LATENCY",
    "TRACKER_LATENCY",
    "compare_runs",
    "device_folder_name",
    "format_bytes",
    "load_run",
    "load_thresholds",
    "main",
    "markdown_table",
    "nearest_rank",
    "noise_table",
    "parse_percent",
    "resolve_thresholds",
    "write_chart",
]
