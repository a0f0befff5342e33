"""Level 1: `build_quantization_config` against TRL's `get_quantization_config`, compared whole."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policyload import LoadSpec, build_quantization_config
from policyload.cases import ConfigCase, config_cases

from .agreement import assert_agrees, observe
from .trl_oracle import model_config, quantization_config_dict

LEVEL = "quantization"


def reference(case: ConfigCase):
    return quantization_config_dict(build_quantization_config(LoadSpec("model", **case.model_config_fields())))


def trl(case: ConfigCase):
    from trl import get_quantization_config

    return quantization_config_dict(get_quantization_config(model_config("model", **case.model_config_fields())))


@pytest.mark.parametrize("case", config_cases(), ids=lambda case: case.id)
def test_quantization_config_matches_trl(case):
    assert_agrees(LEVEL, case.id, observe(reference, case), observe(trl, case))


# The whole input space: valid values and the invalid ones people actually type.
ANY_DTYPES = (None, "auto", "bfloat16", "float16", "float32", "bf16", "fp16", "int8", "float64")
ANY_QUANTIZATIONS = ("none", "8bit", "4bit", "4bit+8bit")
ANY_QUANT_TYPES = ("nf4", "fp4", "int4", "NF4")
ANY_NESTED = (False, True)
ANY_STORAGES = (None, "uint8", "int8", "float16", "bfloat16", "float32", "float64", "bf16", "int4")
ANY_AXES = (ANY_DTYPES, ANY_QUANTIZATIONS, ANY_QUANT_TYPES, ANY_NESTED, ANY_STORAGES)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.builds(ConfigCase, *(st.sampled_from(axis) for axis in ANY_AXES)))
def test_any_input_agrees_with_trl_or_is_a_listed_divergence(case):
    assert_agrees(LEVEL, case.id, observe(reference, case), observe(trl, case))
