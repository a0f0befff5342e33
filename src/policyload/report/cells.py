"""One cell of a report table: bytes, ratios and shares as a person reads them, "n/a" where
there is no figure. Shared by the load table (tables), the DPO bill table (dpo), the gate and the
history page, none of which import each other for it."""

from __future__ import annotations

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
