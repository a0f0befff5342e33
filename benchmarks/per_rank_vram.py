"""Per-rank memory of `load_policy` under torchrun: does every rank load its copy onto its own GPU?

    torchrun --standalone --nproc_per_node gpu -m benchmarks.per_rank_vram \
        --realsize qwen2-0.5b --json out/per-rank-vram.json --markdown out/per-rank-vram.md

Each rank detects its `Topology` (accelerate's local process index, as TRL's recipe does) and
loads the tiny Llama checkpoint, then the real-size one named by `--realsize`, as bf16 4-bit NF4:
the quantized case, where TRL's kbit device map `{"": local_process_index}` decides the GPU.
Per rank and case it records where the parameters landed and, on CUDA, the allocator's peak
(`torch.cuda.max_memory_allocated`) and NVML's used-memory delta on that rank's GPU, the load's
own (baselines subtracted by the trackers). Rank 0 gathers every rank's record into one JSON
file. NVML device indexes are taken to be CUDA's (true unless CUDA_VISIBLE_DEVICES reorders them);
where NVML is missing or restricted, a record's `nvml_unavailable` says why (the allocator's
numbers still stand).

Without CUDA (e.g. 2 gloo processes on a CPU) the loads and the placement still run; the VRAM
part is skipped with its reason in the JSON and on stdout. Exit code 1 when a rank's model landed
anywhere but the device its local process index names.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path

from benchmarks.environment import device_info, library_versions
from fixtures.checkpoints import tiny_checkpoint
from fixtures.realsize import REALSIZE_ARCHITECTURES, realsize_checkpoint
from policyload import LoadSpec, Topology, load_policy
from policyload.load import release_memory

SPEC_FIELDS = dict(dtype="bfloat16", load_in_4bit=True, bnb_4bit_quant_type="nf4")
NO_CUDA = "VRAM skipped: requires CUDA (torch.cuda.is_available() is False); placement recorded only"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="torchrun ... -m benchmarks.per_rank_vram", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--json", required=True, metavar="PATH", help="where rank 0 writes every rank's record")
    parser.add_argument("--markdown", metavar="PATH", help="also write the per-rank table here")
    parser.add_argument(
        "--realsize", choices=REALSIZE_ARCHITECTURES, metavar="NAME",
        help="also load this real-size checkpoint (built on first use); "
        f"one of {', '.join(REALSIZE_ARCHITECTURES)}",
    )
    return parser.parse_args(argv)


def measure_load(name: str, folder: Path, topology: Topology) -> dict:
    """Load one checkpoint on this rank: where it went and, on CUDA, what it cost on this rank's GPU
    (the trackers of `policyload.measure`, as the single-process benchmarks use them; NVML's
    read-out is the reason where NVML is unavailable)."""
    from policyload.measure import CudaAllocatorTracker, NvmlTracker

    spec = LoadSpec(str(folder), **SPEC_FIELDS)
    device = topology.device
    cuda = topology.accelerator == "cuda"
    release_memory()
    trackers = [CudaAllocatorTracker(device), NvmlTracker(topology.local_process_index)] if cuda else []
    with ExitStack() as stack:
        for tracker in trackers:
            stack.enter_context(tracker)
        model = load_policy(spec, topology)
    record = {
        "checkpoint": name,
        "spec": dict(SPEC_FIELDS),
        "expected_device": device,
        "parameter_devices": sorted({str(parameter.device) for parameter in model.parameters()}),
    }
    for tracker in trackers:
        record.update(tracker.readout())
    if not cuda:
        record["vram_skipped"] = NO_CUDA
    del model
    release_memory()
    return record


def checkpoints(args, rank: int, barrier) -> list[tuple[str, Path]]:
    """(name, folder) to load; rank 0 builds missing ones first, so ranks never build the same one twice."""
    if rank == 0:
        tiny_checkpoint("llama")
        if args.realsize:
            realsize_checkpoint(args.realsize)
    barrier()
    chosen = [("tiny-llama", tiny_checkpoint("llama"))]
    if args.realsize:
        chosen.append((args.realsize, realsize_checkpoint(args.realsize)))
    return chosen


def markdown_table(document: dict) -> str:
    from policyload.report import format_bytes

    lines = [
        f"Per-rank load of bf16 4-bit NF4 on {document['device']} "
        f"({document['world_size']} ranks, backend {document['backend']})",
        "",
        "| rank | checkpoint | expected device | parameters on | max allocated | NVML used delta |",
        "|---:|---|---|---|---:|---:|",
    ]
    for rank in document["ranks"]:
        for case in rank["cases"]:
            lines.append(
                f"| {rank['rank']} | {case['checkpoint']} | {case['expected_device']} "
                f"| {', '.join(case['parameter_devices'])} "
                f"| {format_bytes(case.get('cuda_peak_allocated_bytes'))} "
                f"| {format_bytes(case.get('nvml_device_used_delta_bytes'))} |"
            )
    if any("vram_skipped" in case for rank in document["ranks"] for case in rank["cases"]):
        lines += ["", NO_CUDA]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import torch
    import torch.distributed as dist

    args = parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        print(
            "error: run under torchrun (LOCAL_RANK is not set): "
            "torchrun --standalone --nproc_per_node N -m benchmarks.per_rank_vram ...",
            file=sys.stderr,
        )
        return 2
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend=backend)
    try:
        topology = Topology.detect()
        rank = dist.get_rank()
        if rank == 0 and topology.accelerator != "cuda":
            print(NO_CUDA, flush=True)
        cases = [measure_load(name, folder, topology) for name, folder in checkpoints(args, rank, dist.barrier)]
        # On a CPU, accelerate sees no distributed run (PartialState: DistributedType.NO), so every
        # rank's local_process_index is 0 there; torchrun's LOCAL_RANK is recorded beside it.
        record = {
            "rank": rank, "local_rank": int(os.environ["LOCAL_RANK"]),
            "local_process_index": topology.local_process_index, "topology": topology.token, "cases": cases,
        }
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, record)
        misplaced = [
            f"rank {r['rank']} {case['checkpoint']}: parameters on {case['parameter_devices']}, "
            f"expected {case['expected_device']}"
            for r in gathered for case in r["cases"] if case["parameter_devices"] != [case["expected_device"]]
        ]
        if rank == 0:
            document = {
                **device_info(), "versions": library_versions(), "backend": backend,
                "world_size": dist.get_world_size(), "ranks": gathered, "misplaced": misplaced,
            }
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
            table = markdown_table(document)
            print(table, end="")
            if args.markdown:
                Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
                Path(args.markdown).write_text(table)
            for line in misplaced:
                print(f"misplaced: {line}", file=sys.stderr)
        return 1 if misplaced else 0
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
