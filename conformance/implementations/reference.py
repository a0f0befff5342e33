"""The reference (`policyload`): the default implementation under test."""

from __future__ import annotations

from pathlib import Path

from policyload import LoadSpec, build_model_kwargs, build_quantization_config, kbit_device_map, plan_dpo_loads

from ..implementation import Implementation


def quantization_config(fields: dict):
    return build_quantization_config(LoadSpec("model", **fields))


def model_kwargs(path: str, fields: dict, topology) -> dict:
    from ..trl_oracle import reference_spec

    return build_model_kwargs(reference_spec(path, fields), topology)


IMPLEMENTATION = Implementation(
    name="reference",
    divergences=Path(__file__).parents[1] / "divergences.toml",
    quantization_config=quantization_config,
    device_map=kbit_device_map,
    model_kwargs=model_kwargs,
    dpo_plan=plan_dpo_loads,
    description="policyload (this repository)",
)
