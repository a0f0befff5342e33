"""Level "placement": where every parameter and buffer lands, recipe contract against TRL.

TRL 1.8 removed `get_kbit_device_map` saying it never changes where the model lands. Here the
same specs (bf16 unquantized, 8-bit, 4-bit nf4) are loaded with the contract's keywords
(`build_model_kwargs`) and with the keywords TRL's own recipe passes, and the two placements
`{name: (device, dtype)}` are compared whole:

- for real, on this machine (CPU in CI; on a GPU machine the same tests load on the GPUs);
- simulated, for the machines of `cases.MACHINES` (N GPUs, torchrun ranks, an XPU), at two stages:
  right after `from_pretrained` ("load") and after the Trainer has placed the model ("train").
  `placement.py` says exactly what is real and what is simulated there.

The cases that differ are listed, with the reason, in divergences.toml (level "placement").
"""

import pytest
import torch

from policyload import load_policy

from .agreement import assert_agrees, observe
from .cases import (
    MACHINES,
    PLACEMENT_CASES,
    PLACEMENT_LEVEL,
    SIMULATED_ARCHITECTURE,
    STAGES,
    real_case_id,
    real_cases,
    simulated_case_id,
    simulated_cases,
)
from .machine import Machine, this_machine
from .placement import load_as_trl, placement, reference_kwargs, simulated_placement, trl_kwargs
from .trl_oracle import reference_spec


@pytest.mark.parametrize("case, machine, stage", simulated_cases())
def test_simulated_placement_matches_trl(case, machine, stage, tiny_checkpoints, preference_data, tmp_path):
    path = str(tiny_checkpoints[SIMULATED_ARCHITECTURE])
    fields = case.model_config_fields()
    reference_keywords = reference_kwargs(reference_spec(path, fields), machine)
    reference = observe(lambda: simulated_placement(path, reference_keywords, machine, stage))
    trl = observe(
        lambda: simulated_placement(path, trl_kwargs(path, fields, preference_data, tmp_path, machine), machine, stage)
    )
    assert_agrees(PLACEMENT_LEVEL, simulated_case_id(case, machine, stage), reference, trl)


@pytest.mark.parametrize("case, architecture", real_cases())
def test_real_placement_matches_trl(case, architecture, tiny_checkpoints, preference_data, tmp_path):
    """Both loads run for real on this machine; TRL's through its recipe's own loader."""
    path = str(tiny_checkpoints[architecture])
    fields = case.model_config_fields()
    machine = this_machine()
    reference = observe(lambda: placement(load_policy(reference_spec(path, fields), machine.topology)))
    trl = observe(lambda: placement(load_as_trl(path, trl_kwargs(path, fields, preference_data, tmp_path, machine))))
    assert_agrees(PLACEMENT_LEVEL, real_case_id(case, machine, architecture), reference, trl)


@pytest.mark.parametrize("side", ["reference", "trl"])
@pytest.mark.parametrize("case", PLACEMENT_CASES, ids=lambda case: case.id)
def test_simulation_matches_a_real_load_on_this_machine(case, side, tiny_checkpoints, preference_data, tmp_path):
    """The simulator, pointed at this machine, predicts what a real load does, tensor by tensor."""
    path = str(tiny_checkpoints[SIMULATED_ARCHITECTURE])
    fields = case.model_config_fields()
    machine = this_machine()
    if side == "reference":
        kwargs = reference_kwargs(reference_spec(path, fields), machine)
    else:
        kwargs = trl_kwargs(path, fields, preference_data, tmp_path, machine)
    assert simulated_placement(path, kwargs, machine, "load") == placement(load_as_trl(path, kwargs))


# --- the level's own helpers ----------------------------------------------------------------


def test_placement_lists_parameters_and_buffers():
    module = torch.nn.BatchNorm1d(2).to(torch.float16)
    assert placement(module) == {
        "weight": ("cpu", "float16"),
        "bias": ("cpu", "float16"),
        "running_mean": ("cpu", "float16"),
        "running_var": ("cpu", "float16"),
        "num_batches_tracked": ("cpu", "int64"),
    }


def test_machine_tokens_spell_the_machine():
    machines = (Machine(), Machine(None, 0, 2, 1), Machine("cuda", 4), Machine("cuda", 2, 2, 1), Machine("xpu", 1))
    assert [machine.token for machine in machines] == [
        "cpu-1proc",
        "cpu-2procs-rank1",
        "cuda-1proc-4gpus",
        "cuda-2procs-rank1-2gpus",
        "xpu-1proc-1xpu",
    ]


@pytest.mark.parametrize(
    "fields", [dict(accelerator="cuda", devices=0), dict(devices=1), dict(processes=2, local_process_index=2)]
)
def test_machine_rejects_impossible_nodes(fields):
    with pytest.raises(ValueError, match="Machine"):
        Machine(**fields)


def test_simulated_ids_are_unique():
    ids = [param.id for param in simulated_cases()]
    assert len(ids) == len(set(ids)) == len(PLACEMENT_CASES) * len(MACHINES) * len(STAGES)
