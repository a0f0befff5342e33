"""`Topology`: which accelerator this process has and which local process it is.

These are the only two facts TRL's `get_kbit_device_map` reads (`torch.cuda.is_available()` or
`is_torch_xpu_available()`, and `PartialState().local_process_index`). Making them a value lets
the reference, the tests and the benchmarks describe a machine they are not running on.
"""

from __future__ import annotations

from dataclasses import dataclass

ACCELERATORS = (None, "cuda", "xpu")


@dataclass(frozen=True)
class Topology:
    accelerator: str | None = None
    local_process_index: int = 0

    def __post_init__(self) -> None:
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"Topology.accelerator={self.accelerator!r} is not accepted; accepted: {ACCELERATORS}")
        if not isinstance(self.local_process_index, int) or self.local_process_index < 0:
            raise ValueError(
                f"Topology.local_process_index={self.local_process_index!r} is not accepted; "
                "accepted: an integer >= 0"
            )

    @classmethod
    def detect(cls) -> Topology:
        """What this process sees: CUDA first, then XPU (TRL's order), and accelerate's local rank."""
        import torch
        from accelerate import PartialState

        if torch.cuda.is_available():
            accelerator = "cuda"
        elif hasattr(torch, "xpu") and torch.xpu.is_available():
            accelerator = "xpu"
        else:
            accelerator = None
        return cls(accelerator, PartialState().local_process_index)

    @property
    def device(self) -> str:
        """Where this process's tensors go: 'cpu', 'cuda:1', 'xpu:0' (a torch device string)."""
        return f"{self.accelerator}:{self.local_process_index}" if self.accelerator else "cpu"

    @property
    def token(self) -> str:
        """Readable id part: 'cpu', 'cuda1', 'xpu0'."""
        return f"{self.accelerator}{self.local_process_index}" if self.accelerator else "cpu"
