"""Device map and placement in a real multi-process run; one JSON result per rank.

    python -m torch.distributed.run --nproc_per_node 2 conformance/distributed_check.py OUTDIR

accelerate's `PartialState` sets up the process group (gloo on CPU, NCCL on GPUs: on a
multi-GPU machine the same command checks real per-rank placement on cuda:<rank>). Each rank:

1. reads its local rank the way TRL does (`Topology.detect()`, i.e. `PartialState`) and records
   it next to torchrun's `LOCAL_RANK`;
2. computes the contract's `kbit_device_map`;
3. runs TRL's own recipe with `from_pretrained` intercepted (`trl_oracle`), as this process
   really is, to see which `device_map` TRL passes here; and twice more, simulated, for a CUDA
   rank: once with `DPOTrainer` seeing `distributed_type=MULTI_GPU` and once with `NO`, which shows
   whether TRL's distributed override (`model_init_kwargs["device_map"] = None`) applies. On a CPU
   run accelerate's type is MULTI_CPU, which that override does not test for;
4. loads the tiny checkpoint both ways for real (`load_policy`, and TRL's keywords through TRL's
   loader) and records the placement of every tensor after loading ("load") and after accelerate's
   `Accelerator.prepare_model` ("train": the move to the rank's device and the DDP wrap the
   Trainer's `accelerator.prepare` does).

`conformance/test_distributed.py` launches this and asserts on the results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
# Run as a script by torchrun: make the packages importable. After PYTHONPATH's entries (they
# follow sys.path[0], this folder), so a tree put first there wins: the mutated copy of
# `python -m conformance.mutation`, which must reach the ranks too.
_AFTER_PYTHONPATH = 1 + len([entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry])
sys.path[_AFTER_PYTHONPATH:_AFTER_PYTHONPATH] = [str(_ROOT), str(_ROOT / "src")]

from policyload.drift import ABSENT  # noqa: E402  (importable once the path is set)


def _device_map(kwargs: dict):
    return kwargs.get("device_map", ABSENT)


def _outcome(outcome) -> dict:
    """An `agreement.Outcome` as JSON (placement tuples become lists)."""
    return {"value": outcome.value, "error": outcome.error, "message": outcome.message}


def _prepared_placement(model):
    """Placement after `Accelerator.prepare_model`, unwrapped from DDP."""
    from accelerate import Accelerator

    from conformance.placement import placement

    accelerator = Accelerator()
    return placement(accelerator.unwrap_model(accelerator.prepare_model(model)))


def check_rank(out_dir: Path, checkpoint: str | None, dataset: str | None) -> dict:
    import torch
    from accelerate import PartialState

    # On a machine without an accelerator, accelerate makes a torchrun process distributed
    # (MULTI_CPU, gloo) only when asked for the CPU; otherwise every process is a separate
    # single-process run at local index 0. ACCELERATE_USE_CPU is what `accelerate launch --cpu`
    # sets; TrainingArguments (DPOConfig) and AcceleratorState read it too.
    cpu_only = not (torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()))
    if cpu_only:
        os.environ["ACCELERATE_USE_CPU"] = "true"
    state = PartialState(cpu=cpu_only)  # initialises the process group from torchrun's environment

    from conformance.agreement import observe
    from conformance.cases import PLACEMENT_CASES
    from conformance.machine import Machine, this_machine
    from conformance.placement import load_as_trl, placement, trl_kwargs
    from conformance.trl_oracle import reference_spec
    from conformance.trl_release import FACTS, TRL
    from fixtures.checkpoints import tiny_checkpoint
    from fixtures.preference_data import preference_dataset
    from policyload import Topology, kbit_device_map, load_policy

    with state.main_process_first():  # build the fixtures once, not once per rank
        path = checkpoint or str(tiny_checkpoint("llama"))
        data = Path(dataset) if dataset else preference_dataset()

    topology = Topology.detect()
    node = this_machine()
    machine = Machine(node.accelerator, node.devices, int(os.environ["LOCAL_WORLD_SIZE"]), topology.local_process_index)
    # The same rank on a CUDA node with one GPU per process, with DPOTrainer seeing that
    # distributed_type (MULTI_GPU), and the same node run as one process (NO).
    simulated_gpu_rank = {
        True: Machine("cuda", machine.processes, machine.processes, topology.local_process_index),
        False: Machine("cuda", machine.processes),
    }
    work = Path(tempfile.mkdtemp(prefix=f"rank{state.process_index}-", dir=out_dir))
    result = {
        "LOCAL_RANK": int(os.environ["LOCAL_RANK"]),
        "RANK": int(os.environ["RANK"]),
        "local_process_index": topology.local_process_index,
        "process_index": state.process_index,
        "num_processes": state.num_processes,
        "distributed_type": str(state.distributed_type.value),
        "backend": state.backend,
        "device": str(state.device),
        "machine": machine.token,
        "trl": str(TRL),
        "trl_recipe": FACTS.recipe,
        "torch": torch.__version__,
        "ACCELERATE_USE_CPU": os.environ.get("ACCELERATE_USE_CPU"),
        "kbit_device_map": kbit_device_map(topology),
        "cases": {},
    }
    for case in PLACEMENT_CASES:  # the placement level's cases: bf16 unquantized, 8-bit, 4-bit nf4
        fields = case.model_config_fields()
        spec = reference_spec(path, fields)
        trl = trl_kwargs(path, fields, data, work, None)  # this process as it is
        override = {
            ("MULTI_GPU" if distributed else "NO"): _device_map(trl_kwargs(path, fields, data, work, gpu_rank))
            for distributed, gpu_rank in simulated_gpu_rank.items()
        }
        stages = {"load": {}, "train": {}}
        loads = {"reference": (load_policy, spec, topology), "trl": (load_as_trl, path, trl)}
        for side, (load, *arguments) in loads.items():
            model = observe(load, *arguments)
            for stage, measure in (("load", placement), ("train", _prepared_placement)):
                stages[stage][side] = _outcome(observe(measure, model.value) if model.error is None else model)
        result["cases"][case.id] = {
            "trl_device_map": _device_map(trl),
            "trl_device_map_simulated_cuda_rank": override,
            **stages,
        }
    state.wait_for_everyone()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder for rank<RANK>.json")
    parser.add_argument("--checkpoint", help="checkpoint folder (default: the tiny Llama fixture)")
    parser.add_argument("--dataset", help="preference data set folder (default: the fixture)")
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        parser.error(
            "run under torchrun: "
            "python -m torch.distributed.run --nproc_per_node 2 conformance/distributed_check.py OUTDIR"
        )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    result = check_rank(args.out_dir, args.checkpoint, args.dataset)
    (args.out_dir / f"rank{result['RANK']}.json").write_text(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
