"""Level 3: what TRL's own DPO entry point passes to `from_pretrained`, against `build_model_kwargs`.

The reference side is `build_model_kwargs(LoadSpec.from_model_config(cfg))` of the very
`ModelConfig` TRL reads, which is how a TRL user reaches policyload.

TRL's `scripts/dpo.py main()` runs for real, on a real `ModelConfig` and `DPOConfig`, with
`from_pretrained` intercepted at its first call (so no weights are read and nothing trains).
"""

import pytest

from policyload import LoadSpec, Topology, build_model_kwargs
from policyload.cases import load_cases

from .agreement import assert_agrees, observe
from .trl_oracle import comparable_kwargs, model_config, recipe_kwargs, reference_spec

LEVEL = "recipe"
#: This machine, and two simulated ones: local rank 1 of a CUDA node, an XPU.
TOPOLOGIES = (Topology(None), Topology("cuda", 1), Topology("xpu", 0))


def reference(path: str, fields: dict, topology: Topology) -> dict:
    return comparable_kwargs(build_model_kwargs(reference_spec(path, fields), topology))


def recipe_cases():
    return [
        pytest.param(case, topology, id=f"{case.id}-{topology.token}") for topology in TOPOLOGIES for case in load_cases()
    ]


@pytest.mark.parametrize("case, topology", recipe_cases())
def test_recipe_kwargs_match_trl(case, topology, tiny_checkpoints, preference_data, tmp_path, record_observation):
    path = str(tiny_checkpoints["llama"])
    case_id = f"{case.id}-{topology.token}"
    trl = observe(recipe_kwargs, path, case.model_config_fields(), preference_data, tmp_path, topology)
    record_observation(case_id, trl)
    assert_agrees(LEVEL, case_id, observe(reference, path, case.model_config_fields(), topology), trl)


def fields_id(fields: dict) -> str:
    return "-".join(f"{key}={value}" for key, value in fields.items()) or "defaults"


FIELD_CASES = [
    {"model_revision": "v2"},
    {"attn_implementation": "eager"},
    {"attn_implementation": "sdpa", "dtype": "bfloat16"},
    {"trust_remote_code": True},
    {},  # every field at the installed release's default
]
TRUST_REMOTE_CODE_CASE = "trust_remote_code-on-ModelConfig"


def recipe_case_ids() -> set:
    return {param.id for param in recipe_cases()} | {fields_id(f) for f in FIELD_CASES} | {TRUST_REMOTE_CODE_CASE}


@pytest.mark.parametrize("fields", FIELD_CASES, ids=fields_id)
def test_recipe_passes_other_fields(fields, tiny_checkpoints, preference_data, tmp_path, record_observation):
    path = str(tiny_checkpoints["llama"])
    case_id = fields_id(fields)
    trl = observe(recipe_kwargs, path, fields, preference_data, tmp_path)
    record_observation(case_id, trl)
    assert_agrees(LEVEL, case_id, observe(reference, path, fields, Topology(None)), trl)


def test_trust_remote_code_set_on_model_config(tiny_checkpoints, preference_data, tmp_path, record_observation):
    """Code written for TRL < 1.7 sets `model_args.trust_remote_code = True`; from 1.7 TRL reads
    the training config's field instead, and the attribute is silently ignored."""
    path = str(tiny_checkpoints["llama"])
    case_id = TRUST_REMOTE_CODE_CASE
    config = model_config(path)
    config.trust_remote_code = True
    trl = observe(recipe_kwargs, path, {}, preference_data, tmp_path, model_config_object=config)
    record_observation(case_id, trl)
    reference_kwargs = observe(lambda: comparable_kwargs(build_model_kwargs(LoadSpec.from_model_config(config), Topology(None))))
    assert_agrees(LEVEL, case_id, reference_kwargs, trl)
