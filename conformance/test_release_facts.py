"""The per-release facts table is checked against the installed TRL itself, so it cannot rot."""

import dataclasses
import inspect

import trl

from .trl_release import FACTS, TRL
from .upstream_patches import trl_device_decider


def observed_facts():
    from trl import ModelConfig
    from trl.scripts import dpo

    fields = {field.name: field for field in dataclasses.fields(ModelConfig)}
    dtype_field = "dtype" if "dtype" in fields else "torch_dtype"
    recipe_source = inspect.getsource(dpo.main)
    quantization_source = inspect.getsource(trl.get_quantization_config)
    return dataclasses.replace(
        FACTS,
        dtype_field=dtype_field,
        default_dtype=fields[dtype_field].default,
        quant_storage_follows_dtype=f"bnb_4bit_quant_storage=model_args.{dtype_field}" in quantization_source,
        trust_remote_code_on="ModelConfig" if "trust_remote_code" in fields else "DPOConfig",
        has_kbit_device_map=hasattr(trl, "get_kbit_device_map"),
        recipe="trainer" if "model_init_kwargs" in recipe_source else "direct",
        main_takes_dataset_args="dataset_args" in inspect.signature(dpo.main).parameters,
        decider_reads_partial_state="PartialState" in inspect.getsource(trl_device_decider()),
    )


def test_release_facts_describe_the_installed_trl():
    assert observed_facts() == FACTS, f"trl {TRL}: conformance/trl_release.py is out of date"
