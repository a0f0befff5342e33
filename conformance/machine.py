"""`Machine`: a node as the policy load sees it, real (`this_machine()`) or simulated.

The simulated ones are the placement level's machines (`cases.MACHINES`): N GPUs, torchrun
ranks, an XPU. `placement.py` says what is real and what is simulated about a load on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from policyload import Topology

#: Memory of each simulated accelerator (an H100's), and of the simulated host.
DEVICE_MEMORY = "80GiB"
HOST_MEMORY = "256GiB"


@dataclass(frozen=True)
class Machine:
    """A node as the load sees it: accelerator kind and count, processes started on it (torchrun
    `--nproc_per_node`; 1 is a plain `python` run), and which of them this process is."""

    accelerator: str | None = None
    devices: int = 0
    processes: int = 1
    local_process_index: int = 0

    def __post_init__(self) -> None:
        if (self.accelerator is None) != (self.devices == 0):
            raise ValueError(f"Machine.devices={self.devices!r} does not fit accelerator={self.accelerator!r}")
        if not 0 <= self.local_process_index < self.processes:
            raise ValueError(
                f"Machine.local_process_index={self.local_process_index!r} is not accepted; "
                f"accepted: 0..{self.processes - 1}"
            )

    @property
    def topology(self) -> Topology:
        return Topology(self.accelerator, self.local_process_index)

    @property
    def distributed_type(self) -> str:
        """accelerate's `DistributedType` for this process (`PartialState._prepare_backend`)."""
        if self.processes == 1:
            return "NO"
        return {None: "MULTI_CPU", "cuda": "MULTI_GPU", "xpu": "MULTI_XPU"}[self.accelerator]

    @property
    def training_device(self) -> str:
        """`TrainingArguments.device`: the local rank's accelerator, device 0 when not distributed."""
        return self.topology.device

    @property
    def token(self) -> str:
        """Readable id part: 'cpu-1proc', 'cuda-1proc-4gpus', 'cuda-2procs-rank1-2gpus'."""
        processes = "1proc" if self.processes == 1 else f"{self.processes}procs-rank{self.local_process_index}"
        if self.accelerator is None:
            return f"cpu-{processes}"
        unit = "gpu" if self.accelerator == "cuda" else self.accelerator
        return f"{self.accelerator}-{processes}-{self.devices}{unit}{'s' if self.devices > 1 else ''}"

    @property
    def max_memory(self) -> dict:
        return {**{index: DEVICE_MEMORY for index in range(self.devices)}, "cpu": HOST_MEMORY}


def this_machine() -> Machine:
    """This process's node as a single-process `Machine` (how pytest runs)."""
    topology = Topology.detect()
    if topology.accelerator == "cuda":
        return Machine("cuda", torch.cuda.device_count())
    if topology.accelerator == "xpu":
        return Machine("xpu", torch.xpu.device_count())
    return Machine()
