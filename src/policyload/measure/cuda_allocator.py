"""torch.cuda's allocator bytes of a block: what torch itself holds on the device."""

from __future__ import annotations


class CudaAllocatorTracker:
    """torch.cuda allocator bytes of the block alone: peak and resident, allocated and reserved.

    The peak counter is reset on entry and the bytes already allocated are the baseline, so a
    model left over from a previous case does not show up in this one.
    """

    def __init__(self, device: str = "cuda"):
        self.device = device
        self.values: dict = {}

    def __enter__(self) -> CudaAllocatorTracker:
        import torch

        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._allocated = torch.cuda.memory_allocated(self.device)
        self._reserved = torch.cuda.memory_reserved(self.device)
        return self

    def __exit__(self, *exc) -> None:
        import torch

        torch.cuda.synchronize(self.device)
        self.values = {
            "cuda_peak_allocated_bytes": torch.cuda.max_memory_allocated(self.device) - self._allocated,
            "cuda_resident_allocated_bytes": torch.cuda.memory_allocated(self.device) - self._allocated,
            "cuda_peak_reserved_bytes": torch.cuda.max_memory_reserved(self.device) - self._reserved,
            "cuda_resident_reserved_bytes": torch.cuda.memory_reserved(self.device) - self._reserved,
        }

    def readout(self) -> dict:
        return dict(self.values)
