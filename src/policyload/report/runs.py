"""A benchmark run as the report reads it: the rows of a pytest-benchmark JSON file.

`pytest benchmarks --benchmark-json` writes one benchmark per load case, with the case's
checkpoint, dtype, quantization and memory figures in `extra_info` and the run's device in
`machine_info.policyload` (benchmarks/conftest.py). Everything else in the report works on the
`Run` read here, so a malformed file is refused once, here, with a one-line `ReportError`.

Latency is the benchmark's own measurement of the load, `extra_info["median_latency_s"]`: the
median over the measured rounds of the LatencyTracker, which times `load_policy` (and, on a GPU,
the move to the device) and nothing else. pytest-benchmark's `stats.median` times the whole
`load_once` call, the other trackers' bookkeeping included (NVML init and shutdown, allocator
synchronizations and resets: tens to hundreds of milliseconds on a GPU), so it is used only for a
file without `median_latency_s` (not one `pytest benchmarks` wrote), and the Row says so in its
`latency_source`: "tracker" or "stats.median".

A gated memory figure (`peak_bytes`, `resident_bytes`) that is absent, null or not a finite number
reads as None: the measurement is missing, and `compare` treats it as such. A latency that is
absent, null or not finite in `extra_info` is missing the same way, and stats.median stands in.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path


class ReportError(Exception):
    """Input the report cannot use; the message is the whole one-line explanation."""


#: Row.latency_source: the LatencyTracker's median (extra_info.median_latency_s), or pytest-benchmark's.
TRACKER_LATENCY = "tracker"
STATS_LATENCY = "stats.median"


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
    #: Where median_latency_s comes from: TRACKER_LATENCY (extra_info.median_latency_s) or STATS_LATENCY.
    latency_source: str = TRACKER_LATENCY
    #: The case's measured and warm-up rounds (extra_info); None when the file does not say.
    rounds: int | None = None
    warmup_rounds: int | None = None
    # Memory read from the machine against the memory model (benchmarks/test_load.py, item "memory_*"):
    # None where not measurable (tiny checkpoints on CPU) or in runs recorded before these keys.
    memory_measured_bytes: int | None = None
    memory_predicted_bytes: int | None = None
    memory_peak_measured_bytes: int | None = None
    memory_peak_predicted_bytes: int | None = None
    memory_estimates: dict | None = None
    #: Where the measured memory comes from, or why there is none ("n/a: checkpoint below measurable
    #: size ..." for the tiny checkpoints on CPU); None in runs recorded before the key existed.
    memory_source: str | None = None

    @property
    def key(self) -> str:
        return f"{self.checkpoint}/{self.dtype}/{self.quantization}"


@dataclass(frozen=True)
class Run:
    path: Path
    device: str
    machine: dict
    rows: list[Row]
    #: Every case's outcome ({"case_id", "checkpoint", "dtype", "quantization", "outcome", "reason"?}):
    #: measured, skipped, failed or oom; pytest-benchmark's own list has the measured ones only.
    outcomes: tuple = ()
    #: The DPO bill cases (`extra_info["kind"] == "dpo"`, benchmarks/test_dpo.py), their extra_info as
    #: written: kept apart from `rows`, whose key (checkpoint/dtype/quantization) they would repeat.
    dpo: tuple = ()
    dpo_outcomes: tuple = ()
    #: When the run started (pytest-benchmark's ISO `datetime`) and the commit it ran (commit_info.id).
    datetime: str | None = None
    commit: str | None = None
    #: The training-step cases (`extra_info["kind"] == "train"`, benchmarks/test_train.py), kept apart likewise.
    train: tuple = ()
    train_outcomes: tuple = ()

    @property
    def quick(self):
        """`pytest benchmarks --quick` (True/False) as machine_info.policyload records it; None: not recorded."""
        return self.machine.get("quick")

    def duplicate_keys(self) -> list[str]:
        """Case keys that more than one benchmark of the run has, sorted."""
        keys = [row.key for row in self.rows]
        return sorted({key for key in keys if keys.count(key) > 1})

    def rows_by_key(self) -> dict[str, Row]:
        """{case key: row}; a run with a key twice is refused (which of the two would be compared?)."""
        duplicates = self.duplicate_keys()
        if duplicates:
            raise ReportError(
                f"{self.path}: {len(duplicates)} case key(s) occur more than once: {', '.join(duplicates)} "
                "(two benchmarks of one case: which would be compared?)"
            )
        return {row.key: row for row in self.rows}


def _measurement(value):
    """A recorded figure, or None where it is absent, null or not a finite number (a lost measurement)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def _count(value):
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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
    rows, dpo, train = [], [], []
    for index, benchmark in enumerate(document["benchmarks"]):
        try:
            extra = benchmark.get("extra_info", {})
            if extra.get("kind") in ("dpo", "train"):
                (dpo if extra["kind"] == "dpo" else train).append(extra)
                continue
            tracker_latency = _measurement(extra.get("median_latency_s"))
            if tracker_latency is None:
                latency, latency_source = _measurement(benchmark["stats"]["median"]), STATS_LATENCY
                if latency is None:
                    raise ValueError(f"stats.median = {benchmark['stats']['median']!r}")
            else:
                latency, latency_source = float(tracker_latency), TRACKER_LATENCY
            rows.append(
                Row(
                    checkpoint=extra.get("checkpoint", benchmark["name"]),
                    dtype=extra.get("dtype", "?"),
                    quantization=extra.get("quantization", "?"),
                    median_latency_s=latency,
                    peak_bytes=_measurement(extra.get("peak_bytes")),
                    resident_bytes=_measurement(extra.get("resident_bytes")),
                    predicted_bytes=extra.get("predicted_bytes"),
                    # Only a ratio of a figure read from the machine: runs recorded before
                    # "memory_measured_source" existed held a tensor-sum ratio under this name.
                    measured_over_predicted=(
                        extra.get("measured_over_predicted") if "memory_measured_source" in extra else None
                    ),
                    # Likewise: before "bandwidth_fraction_note", the fraction was of a readinto loop,
                    # not of the path the load takes, and was given for tiny and quantized loads too.
                    bandwidth_fraction=(
                        extra.get("bandwidth_fraction") if "bandwidth_fraction_note" in extra else None
                    ),
                    latency_source=latency_source,
                    rounds=_count(extra.get("rounds")),
                    warmup_rounds=_count(extra.get("warmup_rounds")),
                    memory_measured_bytes=extra.get("memory_measured_bytes"),
                    memory_predicted_bytes=extra.get("memory_predicted_bytes"),
                    memory_peak_measured_bytes=extra.get("memory_peak_measured_bytes"),
                    memory_peak_predicted_bytes=extra.get("memory_peak_predicted_bytes"),
                    memory_estimates=extra.get("memory_estimates"),
                    memory_source=extra.get("memory_measured_source"),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ReportError(
                f"{path}: benchmark #{index} has no usable latency: neither extra_info.median_latency_s "
                f"nor a usable stats.median ({error!r})"
            ) from None
    # No `policyload` machine info (a JSON not written through benchmarks/conftest.py): pytest-benchmark's CPU name.
    device = machine.get("device") or document.get("machine_info", {}).get("cpu", {}).get("brand_raw", "unknown")
    outcomes = document.get("policyload_outcomes")
    dpo_outcomes = document.get("policyload_dpo_outcomes")
    train_outcomes = document.get("policyload_train_outcomes")
    return Run(
        path, device, machine, rows, tuple(outcomes) if isinstance(outcomes, list) else (),
        dpo=tuple(dpo), dpo_outcomes=tuple(dpo_outcomes) if isinstance(dpo_outcomes, list) else (),
        datetime=document.get("datetime"), commit=(document.get("commit_info") or {}).get("id"),
        train=tuple(train), train_outcomes=tuple(train_outcomes) if isinstance(train_outcomes, list) else (),
    )


def device_folder_name(device: str) -> str:
    """A run's device as a folder name ('NVIDIA H200' -> 'nvidia-h200'): benchmarks/baselines/<it>/."""
    return re.sub(r"[^a-z0-9._]+", "-", device.lower()).strip("-") or "unknown"
