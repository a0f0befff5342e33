"""Device map and placement in a real 2-process run started by torchrun (CPU: gloo; GPUs: NCCL).

`distributed_check.py` runs on each rank and writes what it saw; the tests here read both ranks'
results. On CPU this runs in CI; on a machine with 2+ GPUs the same tests check real per-rank
placement on cuda:<rank>.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from policyload.drift import ABSENT

from .agreement import Outcome, assert_agrees
from .cases import PLACEMENT_LEVEL, STAGES, TORCHRUN_PROCESSES, TORCHRUN_RANKS, rank_cases, rank_id, torchrun_case_id
from .machine import Machine, this_machine
from .placement import trl_kwargs
from .trl_release import FACTS

TIMEOUT_S = 300
SCRIPT = Path(__file__).with_name("distributed_check.py")
_NODE = this_machine()
pytestmark = pytest.mark.skipif(
    _NODE.accelerator is not None and _NODE.devices < TORCHRUN_PROCESSES,
    reason=(
        f"requires no accelerator (CPU, gloo) or {TORCHRUN_PROCESSES}+ of them: "
        f"one device per rank, {_NODE.devices} here"
    ),
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tiny_checkpoints, preference_data, tmp_path_factory) -> dict[int, dict]:
    """Run `distributed_check.py` under torchrun once; each rank's JSON result, by rank."""
    out_dir = tmp_path_factory.mktemp("distributed")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(TORCHRUN_PROCESSES),
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        str(SCRIPT), str(out_dir), "--checkpoint", str(tiny_checkpoints["llama"]), "--dataset", str(preference_data),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    if run.returncode != 0:
        output = f"{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
        pytest.fail(f"torchrun exited with {run.returncode}:\n{' '.join(command)}\n{output}")
    return {rank: json.loads((out_dir / f"rank{rank}.json").read_text()) for rank in TORCHRUN_RANKS}


@pytest.mark.parametrize("rank", TORCHRUN_RANKS, ids=rank_id)
def test_each_rank_sees_its_own_local_process_index(ranks, rank):
    seen = ranks[rank]
    fields = ("RANK", "LOCAL_RANK", "local_process_index", "process_index", "num_processes")
    assert tuple(seen[field] for field in fields) == (rank, rank, rank, rank, TORCHRUN_PROCESSES)


@pytest.mark.parametrize("rank", TORCHRUN_RANKS, ids=rank_id)
def test_run_is_distributed(ranks, rank):
    """accelerate sees one distributed run (MULTI_CPU over gloo on CPU, MULTI_GPU on GPUs)."""
    expected = "MULTI_GPU" if this_machine().accelerator == "cuda" else "MULTI_CPU"
    assert ranks[rank]["distributed_type"] == expected


@pytest.mark.parametrize("rank", TORCHRUN_RANKS, ids=rank_id)
def test_kbit_device_map_is_the_rank_device(ranks, rank):
    assert ranks[rank]["kbit_device_map"] == ({"": rank} if this_machine().accelerator else None)


@pytest.mark.skipif(
    FACTS.recipe != "trainer",
    reason="requires trl>=1.5: the recipe loads through DPOTrainer, which holds the distributed override",
)
@pytest.mark.parametrize("rank, case", rank_cases())
def test_trl_distributed_override_applies(ranks, rank, case):
    """On each rank, DPOTrainer told it is MULTI_GPU passes device_map=None where the same trainer
    on one process passes a device map ("auto", or get_kbit_device_map's before 1.8)."""
    decided = ranks[rank]["cases"][case.id]["trl_device_map_simulated_cuda_rank"]
    assert (decided["MULTI_GPU"], decided["NO"] is not None) == (None, True), decided


@pytest.mark.parametrize("rank, case", rank_cases())
def test_trl_device_map_in_the_real_run_is_the_simulated_one(
    ranks, rank, case, tiny_checkpoints, preference_data, tmp_path
):
    """What TRL passed in the real run equals what the single-process simulation of this rank
    (placement.trl_kwargs) predicts: the simulation used by test_placement holds where checked."""
    node = this_machine()
    machine = Machine(node.accelerator, node.devices, TORCHRUN_PROCESSES, rank)
    path = str(tiny_checkpoints["llama"])
    simulated = trl_kwargs(path, case.model_config_fields(), preference_data, tmp_path, machine)
    simulated = simulated.get("device_map", ABSENT)
    assert ranks[rank]["cases"][case.id]["trl_device_map"] == simulated


def outcome(recorded: dict) -> Outcome:
    value = recorded["value"]
    if isinstance(value, dict):
        value = {name: tuple(entry) for name, entry in value.items()}
    return Outcome(value=value, error=recorded["error"], message=recorded["message"])


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("rank, case", rank_cases())
def test_placement_matches_trl_on_each_rank(ranks, rank, case, stage):
    recorded = ranks[rank]["cases"][case.id][stage]
    case_id = torchrun_case_id(case, ranks[rank]["machine"], stage)
    assert_agrees(PLACEMENT_LEVEL, case_id, outcome(recorded["reference"]), outcome(recorded["trl"]))
