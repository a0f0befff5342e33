"""Level 3: what TRL's own DPO entry point passes to `from_pretrained`, against `build_model_kwargs`.

The reference side is `build_model_kwargs(LoadSpec.from_model_config(cfg))` of the very
`ModelConfig` TRL reads, which is how a TRL user reaches policyload.

TRL's `scripts/dpo.py main()` runs for real, on a real `ModelConfig` and `DPOConfig`, with
`from_pretrained` intercepted at its first call (so no weights are read and nothing trains).
"""

import pytest

from policyload import LoadSpec, Topology, build_model_kwargs

from .agreement import assert_agrees, observe
from .cases import FIELD_CASES, RECIPE_LEVEL, TRUST_REMOTE_CODE_CASE, fields_id, recipe_case_id, recipe_cases
from .trl_oracle import comparable_kwargs, model_config, recipe_kwargs, reference_spec


def reference(path: str, fields: dict, topology: Topology) -> dict:
    return comparable_kwargs(build_model_kwargs(reference_spec(path, fields), topology))


@pytest.mark.parametrize("case, topology", recipe_cases())
def test_recipe_kwargs_match_trl(case, topology, tiny_checkpoints, preference_data, tmp_path, record_observation):
    path = str(tiny_checkpoints["llama"])
    case_id = recipe_case_id(case, topology)
    trl = observe(recipe_kwargs, path, case.model_config_fields(), preference_data, tmp_path, topology)
    record_observation(case_id, trl)
    assert_agrees(RECIPE_LEVEL, case_id, observe(reference, path, case.model_config_fields(), topology), trl)


@pytest.mark.parametrize("fields", FIELD_CASES, ids=fields_id)
def test_recipe_passes_other_fields(fields, tiny_checkpoints, preference_data, tmp_path, record_observation):
    path = str(tiny_checkpoints["llama"])
    case_id = fields_id(fields)
    trl = observe(recipe_kwargs, path, fields, preference_data, tmp_path)
    record_observation(case_id, trl)
    assert_agrees(RECIPE_LEVEL, case_id, observe(reference, path, fields, Topology(None)), trl)


def test_trust_remote_code_set_on_model_config(tiny_checkpoints, preference_data, tmp_path, record_observation):
    """Code written for TRL < 1.7 sets `model_args.trust_remote_code = True`; from 1.7 TRL reads
    the training config's field instead, and the attribute is silently ignored."""
    path = str(tiny_checkpoints["llama"])
    case_id = TRUST_REMOTE_CODE_CASE
    config = model_config(path)
    config.trust_remote_code = True
    trl = observe(recipe_kwargs, path, {}, preference_data, tmp_path, model_config_object=config)
    record_observation(case_id, trl)
    reference_kwargs = observe(
        lambda: comparable_kwargs(build_model_kwargs(LoadSpec.from_model_config(config), Topology(None)))
    )
    assert_agrees(RECIPE_LEVEL, case_id, reference_kwargs, trl)
