"""Wall time of a block, the device synchronized on both ends so the host clock covers its work."""

from __future__ import annotations

import time


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def synchronize(device: str | None) -> None:
    """Wait for queued device work, so a host clock read after it covers that work."""
    if device and device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


class LatencyTracker:
    """Wall time of the block with `perf_counter`, the device synchronized on both ends."""

    def __init__(self, device: str | None = None):
        self.device = device
        self.seconds: float | None = None

    def __enter__(self) -> LatencyTracker:
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start

    def readout(self) -> dict:
        return {"latency_s": self.seconds}
