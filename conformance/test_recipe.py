"""Level 3: what TRL's own DPO entry point passes to `from_pretrained`, against `build_model_kwargs`.

The reference side is `build_model_kwargs(LoadSpec.from_model_config(cfg))` of the very
`ModelConfig` TRL reads, which is how a TRL user reaches policyload.

TRL's `scripts/dpo.py main()` runs for real, on a real `ModelConfig` and `DPOConfig`, with
`from_pretrained` intercepted at its first call (so no weights are read and nothing trains).
"""

import pytest

from policyload import Topology, build_model_kwargs
from policyload.cases import load_cases

from .agreement import assert_agrees, observe
from .trl_oracle import comparable_kwargs, recipe_kwargs, reference_spec

LEVEL = "recipe"
#: A second machine shape for the quantized cases: local rank 1 of a CUDA node.
SIMULATED = Topology("cuda", 1)


def reference(path: str, fields: dict, topology: Topology) -> dict:
    return comparable_kwargs(build_model_kwargs(reference_spec(path, fields), topology))


def recipe_cases():
    cases = [(case, Topology(None)) for case in load_cases()]
    cases += [(case, SIMULATED) for case in load_cases() if case.storage is None]
    return [pytest.param(case, topology, id=f"{case.id}-{topology.token}") for case, topology in cases]


@pytest.mark.parametrize("case, topology", recipe_cases())
def test_recipe_kwargs_match_trl(case, topology, tiny_checkpoints, preference_data, tmp_path):
    path = str(tiny_checkpoints["llama"])
    trl = observe(recipe_kwargs, path, case.model_config_fields(), preference_data, tmp_path, topology)
    assert_agrees(LEVEL, f"{case.id}-{topology.token}", observe(reference, path, case.model_config_fields(), topology), trl)


@pytest.mark.parametrize(
    "fields",
    [
        {"model_revision": "v2"},
        {"attn_implementation": "eager"},
        {"attn_implementation": "sdpa", "dtype": "bfloat16"},
        {"trust_remote_code": True},
        {},  # every field at the installed release's default
    ],
    ids=lambda fields: "-".join(f"{key}={value}" for key, value in fields.items()) or "defaults",
)
def test_recipe_passes_other_fields(fields, tiny_checkpoints, preference_data, tmp_path):
    path = str(tiny_checkpoints["llama"])
    case_id = "-".join(f"{key}={value}" for key, value in fields.items())
    reference_kwargs = observe(reference, path, fields, Topology(None))
    assert_agrees(LEVEL, case_id, reference_kwargs, observe(recipe_kwargs, path, fields, preference_data, tmp_path))
