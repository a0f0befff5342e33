"""Whether a benchmark case can fit the machine, from the prediction plus a rough headroom.

Separate from the prediction because it is a policy of the benchmarks (skip what cannot fit),
not part of the model of bytes: its numbers never judge a measurement.
"""

from __future__ import annotations

#: Headroom a load needs beyond the predicted peak: libraries loaded on first use and a forward
#: pass on the host, the CUDA context and workspace on a GPU. Rough, and only used to skip cases
#: that cannot fit, never to judge a measurement.
HOST_HEADROOM_BYTES = 512 * 1024**2
DEVICE_HEADROOM_BYTES = 1024**3


def fit_problem(what: str, needed_bytes: int, available_bytes: int) -> str | None:
    """A skip reason if `needed_bytes` exceed `available_bytes` of `what`, else None."""
    if needed_bytes <= available_bytes:
        return None
    gib = 1024**3
    return (
        f"does not fit: needs {needed_bytes / gib:.1f} GiB of {what} (memory model), "
        f"{available_bytes / gib:.1f} GiB available"
    )
