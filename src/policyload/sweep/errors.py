"""How the sweep reports failure: the one error that stops a sweep before it starts, and the
one line of a command's output that a failed row (or that error) quotes.

Everything that goes wrong with one release is a row's status, never an exception: only what
stops the whole sweep (no uv, an unusable `--python`, no index, no docs page block) raises.
"""

from __future__ import annotations


class SweepError(Exception):
    """The sweep cannot start; `main()` prints it as `error: ...` and exits 2."""


def last_line(text: str) -> str:
    """The last non-blank line of a command's output, cut to 300 characters: a row's status
    stays one table cell however long the traceback."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
