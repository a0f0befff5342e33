"""LlamaFactory 0.9.5: `model/model_utils/quantization.py`'s `configure_quantization`, the function
that puts `quantization_config` and `device_map` into its `from_pretrained` keywords for on-the-fly
bitsandbytes quantization, called unmodified with its own `ModelArguments` (tox -e impl-llamafactory).

Installed --no-deps (its requirements pin transformers and pull vLLM-era extras), plus omegaconf,
which `hparams/model_args.py` imports. Reached without `llamafactory.model`'s and
`llamafactory.hparams`' `__init__`, which import the whole loader, trainer and data stack.

How a case maps onto LlamaFactory's arguments, and what it cannot express (`NotApplicable`):
- 4-bit / 8-bit -> `quantization_bit` 4 / 8 (one field: both at once cannot be said);
- dtype -> `compute_dtype` as its parser sets it: bf16: true -> bfloat16, fp16: true -> float16,
  neither -> `infer_optim_dtype` of the checkpoint, float32 for a float32 checkpoint. There is no
  dtype field: None, "auto" and invalid dtype names cannot be said;
- `bnb_4bit_quant_type` -> `quantization_type` (its parser accepts only "fp4" and "nf4");
- `use_bnb_nested_quant` -> `double_quantization`; there is no quant storage field.

The full keyword set and the DPO plan are not wired: `model/loader.py` assembles the keywords in
`load_model` through `patcher.patch_config`, which reads the checkpoint's config and tokenizer and
the whole `FinetuningArguments` parse.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from unittest import mock

import torch

from ..implementation import Implementation, NotApplicable
from . import import_skipping_package_inits

_COMPUTE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_QUANT_TYPES = ("fp4", "nf4")


def _module(name: str):
    return import_skipping_package_inits(f"llamafactory.{name}", "llamafactory", "impl-llamafactory")


def _configure(quantization_bit: int, compute_dtype, quant_type: str = "nf4", double: bool = True) -> dict:
    """The keywords `configure_quantization` adds for a plain (not pre-quantized) checkpoint."""
    from transformers import LlamaConfig

    arguments = _module("hparams.model_args").ModelArguments(
        model_name_or_path="model",
        quantization_bit=quantization_bit,
        quantization_type=quant_type,
        double_quantization=double,
    )
    arguments.compute_dtype = compute_dtype  # as hparams/parser.py sets it from bf16 / fp16
    init_kwargs = {}
    _module("model.model_utils.quantization").configure_quantization(
        LlamaConfig(), None, arguments, is_trainable=True, init_kwargs=init_kwargs
    )
    return init_kwargs


def quantization_config(fields: dict):
    if fields["load_in_4bit"] and fields["load_in_8bit"]:
        raise NotApplicable("one quantization_bit field: 4-bit and 8-bit at once cannot be asked for")
    if fields["dtype"] not in _COMPUTE_DTYPES:
        raise NotApplicable(f"no dtype field: dtype={fields['dtype']!r} cannot be asked for")
    if fields["bnb_4bit_quant_type"] not in _QUANT_TYPES or fields["bnb_4bit_quant_storage"] is not None:
        raise NotApplicable("quantization_type is 'fp4' or 'nf4', and there is no quant storage field")
    bits = 4 if fields["load_in_4bit"] else 8 if fields["load_in_8bit"] else None
    if bits is None:
        return None  # configure_quantization is not reached without quantization_bit
    dtype = _COMPUTE_DTYPES[fields["dtype"]]
    return _configure(bits, dtype, fields["bnb_4bit_quant_type"], fields["use_bnb_nested_quant"]).get(
        "quantization_config"
    )


def device_map(topology):
    """The `device_map` of an 8-bit load on `topology`: `get_current_device()` reads
    transformers' `is_torch_*_available` (imported into extras/misc.py by those names) and LOCAL_RANK."""
    misc = _module("extras.misc")
    available = {
        "is_torch_cuda_available": topology.accelerator == "cuda",
        "is_torch_xpu_available": topology.accelerator == "xpu",
        "is_torch_npu_available": False,
        "is_torch_mps_available": False,
    }
    with contextlib.ExitStack() as stack:
        replacements = {name: (lambda value=value: value) for name, value in available.items()}
        stack.enter_context(mock.patch.dict(misc.__dict__, replacements))
        stack.enter_context(mock.patch.dict(os.environ, {"LOCAL_RANK": str(topology.local_process_index)}))
        return _configure(8, torch.float32).get("device_map", "<not set>")


_NO_RECIPE = (
    "model/loader.py load_model assembles them through patcher.patch_config "
    "(checkpoint, tokenizer, full argument parse)"
)
IMPLEMENTATION = Implementation(
    name="llamafactory",
    divergences=Path(__file__).with_name("llamafactory.toml"),
    quantization_config=quantization_config,
    device_map=device_map,
    missing={"recipe": "not wired: " + _NO_RECIPE, "dpo-plan": "no DPO load plan function"},
    description="LlamaFactory 0.9.5, model/model_utils/quantization.py configure_quantization",
    requires=("llamafactory", "impl-llamafactory"),
)
