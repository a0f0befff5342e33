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

The modules, one job each: `runs` reads a run, `tables` formats it (markdown, chart), `gate`
holds the thresholds, the regression check and the noise measurement, `cli` the command line.
The names below are re-exported so that `from policyload.report import ...` keeps working.
None of this imports torch or transformers: the command starts in well under a second.
"""

from .cli import main
from .gate import (
    DEFAULT_THRESHOLDS,
    GATED_METRICS,
    THRESHOLD_KEYS,
    Metric,
    compare_runs,
    load_thresholds,
    nearest_rank,
    noise_table,
    parse_percent,
    resolve_thresholds,
)
from .runs import ReportError, Row, Run, device_folder_name, load_run
from .tables import format_bytes, markdown_table, write_chart

__all__ = [
    "DEFAULT_THRESHOLDS",
    "GATED_METRICS",
    "THRESHOLD_KEYS",
    "Metric",
    "ReportError",
    "Row",
    "Run",
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
