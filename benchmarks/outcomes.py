"""How a benchmark case ended, for the JSON's `policyload_outcomes` (written by benchmarks/conftest.py):
a plain module, so tests and tools import it without importing a conftest."""

from __future__ import annotations


def error_outcome(excinfo) -> dict:
    """A failed case's outcome: "oom" when the load ran out of memory (MemoryError, torch's
    OutOfMemoryError, a fresh process killed by SIGKILL), else "failed"; the error's type and first line."""
    error = excinfo.value
    first_line = (str(error).strip().splitlines() or [""])[0]
    oom = (
        isinstance(error, MemoryError)
        or type(error).__name__ == "OutOfMemoryError"
        or "out of memory" in first_line.lower()
        or "child died (signal 9" in first_line
    )
    return {"outcome": "oom" if oom else "failed", "error_type": type(error).__name__, "reason": first_line}
