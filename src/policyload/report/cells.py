"""One cell of a report table: bytes, ratios and shares as a person reads them, "n/a" where
there is no figure. Shared by the load table (tables), the DPO bill table (dpo), the gate and the
history page, none of which import each other for it."""

from __future__ import annotations

import re

#: A skip every run without --realsize has, collapsed into one line rather than a row per case.
ROUTINE_SKIP = "real-size case: run with --realsize"


def format_bytes(value) -> str:
    if value is None:
        return "n/a"
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"


def ratio(value, digits=3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def fraction(value) -> str:
    """A share of the bandwidth; one under 0.1% in scientific notation, where a percentage would show 0.0%."""
    return "n/a" if value is None else f"{value:.2e}" if value < 0.001 else f"{value:.1%}"


def percent_off(value, measured) -> str:
    if value is None or not measured:
        return "n/a"
    return f"{format_bytes(value)} ({value / measured - 1:+.1%})"


#: Where a table whose memory is n/a points its reader: the real-size results and how to make them.
REAL_SIZE_POINTER = (
    "Measured at real size instead: docs/memory.md (the Qwen2-0.5B shape on CPU, "
    "benchmarks/results/cpu-x86_64-2core/), or `tox -e bench-realsize-cpu`."
)


def not_measured(what: str, sources: list[str]) -> str:
    """Why no case's `what` (memory, the DPO bill) was measured, said once rather than as an n/a
    column per case: the tiny checkpoints' sizes and the threshold (benchmarks/test_load.py
    `not_measurable` writes one source per case), else the sources as given."""
    sizes = [re.match(r"n/a: checkpoint below measurable size \((\d+) KiB; (.*)\)$", source) for source in sources]
    if sizes and all(sizes):
        kib = sorted(int(match.group(1)) for match in sizes)
        size = f"{kib[0]} KiB" if kib[0] == kib[-1] else f"{kib[0]}-{kib[-1]} KiB"
        return (
            f"{what}: n/a in all {len(sources)} cases: checkpoints of {size} are below the "
            f"measurable size ({sizes[0].group(2)}); a process's own paging and heap are larger than the model. "
            + REAL_SIZE_POINTER
        )
    return f"{what}: n/a ({'; '.join(sorted(set(sources)))}). {REAL_SIZE_POINTER}"
