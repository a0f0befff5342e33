"""oumi 0.9: `core/configs/params/peft_params.py`'s `PeftParams.to_bits_and_bytes`, the config
`builders/models.py` `build_huggingface_model` passes as `quantization_config` for a q_lora run,
called unmodified on its own `PeftParams` (tox -e impl-oumi).

Installed --no-deps (its requirements pin other transformers / trl releases), plus omegaconf;
reached without the `oumi`, `oumi.core`, `oumi.core.configs` package `__init__`s, which import
every config class, the registry and the launcher.

How a case maps onto oumi's configs: 4-bit / 8-bit -> `q_lora=True, q_lora_bits=4 / 8` (one
field: both at once cannot be said; without quantization oumi passes no bitsandbytes config);
the quant type, nested quantization and quant storage -> the `PeftParams` fields of the same
names (None keeps oumi's default, "uint8"). The case's dtype is oumi's *model* dtype
(`ModelParams.torch_dtype_str`), which never reaches `to_bits_and_bytes`: the 4-bit compute dtype
is a `PeftParams` field of its own, left at its default. Dtypes that are not load dtypes cannot
be said (ModelParams refuses them).

The device map has no function: `build_huggingface_model` decides it inline
(`model_params.device_map`, "auto" by default, `cuda:<local rank>` when distributed).
"""

from __future__ import annotations

from pathlib import Path

from ..implementation import Implementation, NotApplicable
from . import import_skipping_package_inits

_LOAD_DTYPES = (None, "auto", "bfloat16", "float16", "float32")


def quantization_config(fields: dict):
    if fields["load_in_4bit"] and fields["load_in_8bit"]:
        raise NotApplicable("one q_lora_bits field: 4-bit and 8-bit at once cannot be asked for")
    if fields["dtype"] not in _LOAD_DTYPES:
        raise NotApplicable(f"dtype={fields['dtype']!r} is not a model dtype ModelParams accepts")
    if not (fields["load_in_4bit"] or fields["load_in_8bit"]):
        return None  # no q_lora: build_huggingface_model passes no bitsandbytes config
    module = import_skipping_package_inits("oumi.core.configs.params.peft_params", "oumi", "impl-oumi")
    storage = fields["bnb_4bit_quant_storage"]
    storage = {} if storage is None else {"bnb_4bit_quant_storage": storage}  # None: oumi's default
    params = module.PeftParams(
        q_lora=True,
        q_lora_bits=4 if fields["load_in_4bit"] else 8,
        bnb_4bit_quant_type=fields["bnb_4bit_quant_type"],
        use_bnb_nested_quant=fields["use_bnb_nested_quant"],
        **storage,
    )
    return params.to_bits_and_bytes()


IMPLEMENTATION = Implementation(
    name="oumi",
    divergences=Path(__file__).with_name("oumi.toml"),
    quantization_config=quantization_config,
    missing={
        "device-map": "decided inline in builders/models.py build_huggingface_model, no function",
        "recipe": "build_huggingface_model loads the model itself (config, class, adapters), no keyword function",
        "dpo-plan": "no DPO load plan function",
    },
    description="oumi 0.9, core/configs/params/peft_params.py PeftParams.to_bits_and_bytes",
    requires=("oumi", "impl-oumi"),
)
