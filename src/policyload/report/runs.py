"""A benchmark run as the report reads it: the rows of a pytest-benchmark JSON file.

`pytest benchmarks --benchmark-json` writes one benchmark per load case, with the case's
checkpoint, dtype, quantization and memory figures in `extra_info` and the run's device in
`machine_info.policyload` (benchmarks/conftest.py). Everything else in the report works on the
`Run` read here, so a malformed file is refused once, here, with a one-line `ReportError`.
"""

from __future__ import annotations

import gzip
import json
import re
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
    # No `policyload` machine info (a JSON not written through benchmarks/conftest.py): pytest-benchmark's CPU name.
    device = machine.get("device") or document.get("machine_info", {}).get("cpu", {}).get("brand_raw", "unknown")
    return Run(path, device, machine, rows)


def device_folder_name(device: str) -> str:
    """A run's device as a folder name ('NVIDIA H200' -> 'nvidia-h200'): benchmarks/baselines/<it>/."""
    return re.sub(r"[^a-z0-9._]+", "-", device.lower()).strip("-") or "unknown"
