"""Every case list of the conformance suite and the ids built from them: one home.

The test modules parametrize over these lists, `distributed_check.py` (run by torchrun, outside
pytest) loads the same placement cases, and `test_suite_helpers.py` holds every listed divergence
to a case some level can produce (`all_case_ids`). An id spells its case, so a failing case reads
without opening the code; the `ConfigCase` part of it comes from `policyload.cases`.
"""

from __future__ import annotations

import itertools

import pytest

from fixtures.checkpoints import TINY_ARCHITECTURES
from policyload import Topology
from policyload.cases import ConfigCase, config_cases, load_cases

from .dpo_cases import dpo_case_ids
from .machine import Machine, this_machine

#: The levels, as divergences.toml names them (its `level` field).
QUANTIZATION_LEVEL = "quantization"
DEVICE_MAP_LEVEL = "device-map"
RECIPE_LEVEL = "recipe"
PLACEMENT_LEVEL = "placement"
#: Every load of DPO training against TRL's DPO recipe and trainer (test_dpo_plan.py; cases in dpo_cases.py).
DPO_PLAN_LEVEL = "dpo-plan"
#: How TRL prepares the reference under DeepSpeed and FSDP2 (test_reference_engine.py).
REFERENCE_ENGINE_LEVEL = "reference-engine"

# --- level "quantization" -------------------------------------------------------------------

#: The whole input space of the property test: valid values and the invalid ones people actually type.
ANY_DTYPES = (None, "auto", "bfloat16", "float16", "float32", "bf16", "fp16", "int8", "float64")
ANY_QUANTIZATIONS = ("none", "8bit", "4bit", "4bit+8bit")
ANY_QUANT_TYPES = ("nf4", "fp4", "int4", "NF4")
ANY_NESTED = (False, True)
ANY_STORAGES = (None, "uint8", "int8", "float16", "bfloat16", "float32", "float64", "bf16", "int4")
ANY_AXES = (ANY_DTYPES, ANY_QUANTIZATIONS, ANY_QUANT_TYPES, ANY_NESTED, ANY_STORAGES)


def quantization_case_ids() -> set:
    """The matrix cases and every case the property test can draw."""
    return {case.id for case in [ConfigCase(*values) for values in itertools.product(*ANY_AXES)] + config_cases()}


# --- level "device-map" ---------------------------------------------------------------------

DEVICE_MAP_TOPOLOGIES = [
    Topology(None, 0),
    *(Topology("cuda", index) for index in range(4)),
    Topology("xpu", 0),
    Topology("xpu", 1),
]


def trainer_case_id(topology: Topology) -> str:
    """Id of the trainer's device decision (TRL >= 1.8) on `topology`."""
    return f"trainer-{topology.token}"


def device_map_case_ids() -> set:
    return {t.token for t in DEVICE_MAP_TOPOLOGIES} | {trainer_case_id(t) for t in DEVICE_MAP_TOPOLOGIES}


# --- level "recipe" -------------------------------------------------------------------------

#: This machine, and two simulated ones: local rank 1 of a CUDA node, an XPU.
RECIPE_TOPOLOGIES = (Topology(None), Topology("cuda", 1), Topology("xpu", 0))
#: `ModelConfig` fields other than the dtype and quantization ones.
FIELD_CASES = [
    {"model_revision": "v2"},
    {"attn_implementation": "eager"},
    {"attn_implementation": "sdpa", "dtype": "bfloat16"},
    {"trust_remote_code": True},
    {},  # every field at the installed release's default
]
TRUST_REMOTE_CODE_CASE = "trust_remote_code-on-ModelConfig"


def recipe_case_id(case: ConfigCase, topology: Topology) -> str:
    return f"{case.id}-{topology.token}"


def recipe_cases():
    return [
        pytest.param(case, topology, id=recipe_case_id(case, topology))
        for topology in RECIPE_TOPOLOGIES
        for case in load_cases()
    ]


def fields_id(fields: dict) -> str:
    return "-".join(f"{key}={value}" for key, value in fields.items()) or "defaults"


def recipe_case_ids() -> set:
    return {param.id for param in recipe_cases()} | {fields_id(f) for f in FIELD_CASES} | {TRUST_REMOTE_CODE_CASE}


# --- level "placement" ----------------------------------------------------------------------

#: Right after `from_pretrained` ("load"), and after the Trainer has placed the model ("train").
STAGES = ("load", "train")
#: bf16 unquantized, 8-bit and 4-bit nf4: the three ways the recipe places a model.
PLACEMENT_CASES = [
    ConfigCase("bfloat16", "none"),
    ConfigCase("bfloat16", "8bit"),
    ConfigCase("bfloat16", "4bit", "nf4"),
]
MACHINES = [
    Machine(),  # CPU, plain python
    Machine(None, 0, processes=2, local_process_index=1),  # torchrun on CPU (gloo), rank 1
    Machine("cuda", 1),
    Machine("cuda", 2),
    Machine("cuda", 4),  # one process on a 4-GPU node: "auto" may spread the model
    Machine("cuda", 2, processes=2, local_process_index=0),
    Machine("cuda", 2, processes=2, local_process_index=1),
    Machine("cuda", 4, processes=4, local_process_index=3),
    Machine("xpu", 1),
]
SIMULATED_ARCHITECTURE = "llama"
REAL_ARCHITECTURES = ("llama", "qwen2", "gpt2")
#: Processes of the real torchrun run (test_distributed.py): one device each on an accelerator node.
TORCHRUN_PROCESSES = 2
TORCHRUN_RANKS = range(TORCHRUN_PROCESSES)


def simulated_case_id(case: ConfigCase, machine: Machine, stage: str) -> str:
    return f"{case.id}-{machine.token}-{stage}"


def real_case_id(case: ConfigCase, machine: Machine, architecture: str) -> str:
    return f"{case.id}-{machine.token}-load-{architecture}-real"


def torchrun_case_id(case: ConfigCase, machine_token: str, stage: str) -> str:
    """Id of a rank's case in the real torchrun run (test_distributed.py)."""
    return f"{case.id}-{machine_token}-{stage}-torchrun-real"


def placement_case_ids() -> set:
    """Every case id this level can produce (real ids for any machine of `MACHINES`' shape)."""
    simulated = {simulated_case_id(c, m, s) for c in PLACEMENT_CASES for m in MACHINES for s in STAGES}
    real = {
        real_case_id(c, m, a) for c in PLACEMENT_CASES for m in MACHINES if m.processes == 1 for a in REAL_ARCHITECTURES
    }
    torchrun = {
        torchrun_case_id(c, Machine(m.accelerator, m.devices, m.processes, rank).token, s)
        for c in PLACEMENT_CASES for m in MACHINES if m.processes > 1 for rank in range(m.processes) for s in STAGES
    }  # fmt: skip
    return simulated | real | torchrun


def simulated_cases():
    return [
        pytest.param(case, machine, stage, id=simulated_case_id(case, machine, stage))
        for machine in MACHINES
        for case in PLACEMENT_CASES
        for stage in STAGES
    ]


def real_cases():
    machine = this_machine()
    return [
        pytest.param(case, architecture, id=real_case_id(case, machine, architecture))
        for architecture in REAL_ARCHITECTURES
        for case in PLACEMENT_CASES
    ]


def rank_id(rank: int) -> str:
    return f"rank{rank}"


def rank_cases():
    """Each rank of the torchrun run x each placement case."""
    return [
        pytest.param(rank, case, id=f"{rank_id(rank)}-{case.id}") for rank in TORCHRUN_RANKS for case in PLACEMENT_CASES
    ]


# --- level 4: loading -----------------------------------------------------------------------


def loading_cases():
    """Every tiny checkpoint x every case that differs in what gets loaded."""
    return [
        pytest.param(architecture, case, id=f"{architecture}-{case.id}")
        for architecture in TINY_ARCHITECTURES
        for case in load_cases()
    ]


# --- level "reference-engine" ---------------------------------------------------------------

#: ZeRO configs by case id: the stage, and what else the user's config carries (`offload_optimizer`,
#: `offload_param`, or `blocks`: the `optimizer` and `scheduler` blocks of DeepSpeed's own examples).
REFERENCE_ENGINE_DEEPSPEED_CASES = {
    "zero1": dict(stage=1),
    "zero2": dict(stage=2),
    "zero3": dict(stage=3),
    "zero1-offload-optimizer": dict(stage=1, offload_optimizer=True),
    "zero2-offload-optimizer": dict(stage=2, offload_optimizer=True),
    "zero3-offload-optimizer": dict(stage=3, offload_optimizer=True),
    "zero3-offload-param": dict(stage=3, offload_param=True),
    "zero2-optimizer-scheduler": dict(stage=2, blocks=True),
    "zero3-optimizer-scheduler": dict(stage=3, blocks=True),
}
#: The FSDP case: accelerate's FSDP2 plugin.
REFERENCE_ENGINE_FSDP_CASE = "fsdp2"


def all_case_ids() -> dict[str, set]:
    """Every case id each level with divergences can produce, matrix and property inputs alike."""
    return {
        QUANTIZATION_LEVEL: quantization_case_ids(),
        DEVICE_MAP_LEVEL: device_map_case_ids(),
        RECIPE_LEVEL: recipe_case_ids(),
        PLACEMENT_LEVEL: placement_case_ids(),
        DPO_PLAN_LEVEL: dpo_case_ids(),
        REFERENCE_ENGINE_LEVEL: {*REFERENCE_ENGINE_DEEPSPEED_CASES, REFERENCE_ENGINE_FSDP_CASE},
    }
