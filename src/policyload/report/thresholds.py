"""compare's allowances: the thresholds TOML file, the command line flags, the defaults.

Kept apart from the gate itself (`gate`) because it is configuration, not measurement: the
command line parses its flags with `parse_percent` before any run is read, and the thresholds
file is refused (naming the file and the key) before a comparison starts, so that a bad gate
configuration is the first error reported. Precedence: flag, then file, then DEFAULT_THRESHOLDS.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .runs import ReportError


def parse_percent(text: str) -> float:
    """'15%' or '15' -> 0.15.

    An argparse `type`: its ArgumentTypeError becomes argparse's usage error on the command line;
    `load_thresholds` turns it into a ReportError naming the file.
    """
    try:
        value = float(text.strip().removesuffix("%")) / 100
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage; accepted: e.g. '15%' or '15'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; accepted: a percentage >= 0")
    return value


#: compare's allowances when neither a thresholds file nor a flag sets them (fractions; seconds).
DEFAULT_THRESHOLDS = {"max_latency_regression": 0.15, "max_memory_regression": 0.02, "latency_floor_s": 0.0}
#: thresholds-file key -> (DEFAULT_THRESHOLDS key, how the file writes it, parser).
THRESHOLD_KEYS = {
    "max_latency_regression": ("max_latency_regression", 'a percentage string such as "15%"', "percent"),
    "max_memory_regression": ("max_memory_regression", 'a percentage string such as "2%"', "percent"),
    "latency_floor_ms": ("latency_floor_s", "a number of milliseconds >= 0 such as 50", "ms"),
}


def load_thresholds(path) -> dict[str, float]:
    """The allowances of a thresholds TOML file: {"max_latency_regression": 0.15, "latency_floor_s": 0.05, ...}.

    Each key is optional. Percentages are strings, "15%" (a bare number is refused: 0.15 would
    read as 0.15% to one reader and 15% to another); `latency_floor_ms` is a number. An unknown
    key or a bad value is refused, naming the file, the key and what is accepted.
    """
    # Imported here, not above: on Python 3.10 without tomli, only `--thresholds` needs it.
    from .._toml import tomllib

    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except OSError as error:
        raise ReportError(f"{path}: cannot read ({error.strerror or error})") from None
    except tomllib.TOMLDecodeError as error:
        raise ReportError(f"{path}: not valid TOML ({error})") from None
    unknown = sorted(document.keys() - THRESHOLD_KEYS.keys())
    if unknown:
        raise ReportError(f"{path}: unknown key(s) {unknown}; accepted: {sorted(THRESHOLD_KEYS)}")
    thresholds = {}
    for key, value in document.items():
        field, accepted, kind = THRESHOLD_KEYS[key]
        if kind == "percent" and isinstance(value, str) and value.strip().endswith("%"):
            try:
                thresholds[field] = parse_percent(value)
            except argparse.ArgumentTypeError as error:
                raise ReportError(f"{path}: {key}: {error}") from None
        elif kind == "ms" and isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            thresholds[field] = value / 1000
        else:
            raise ReportError(f"{path}: {key} = {value!r} is not accepted; accepted: {accepted}")
    return thresholds


def resolve_thresholds(
    path=None, *, max_latency_regression=None, max_memory_regression=None, latency_floor_s=None
) -> dict[str, float]:
    """compare's allowances, each from the first that sets it: the argument (a command line flag;
    None: not given), the thresholds file at `path`, DEFAULT_THRESHOLDS."""
    flags = {
        "max_latency_regression": max_latency_regression,
        "max_memory_regression": max_memory_regression,
        "latency_floor_s": latency_floor_s,
    }
    thresholds = {**DEFAULT_THRESHOLDS, **(load_thresholds(path) if path else {})}
    thresholds.update({key: value for key, value in flags.items() if value is not None})
    return thresholds
