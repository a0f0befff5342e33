"""The keywords TRL's DPO recipe passes to `from_pretrained`, built from a `LoadSpec`.

Contract (TRL 0.26-1.7 `scripts/dpo.py` and `trainer/utils.py`): `revision`, `attn_implementation`,
`trust_remote_code` and `dtype` always; `quantization_config` and `device_map` only when 4- or
8-bit loading is asked for.
"""

from __future__ import annotations

import torch
from transformers import BitsAndBytesConfig

from .spec import LoadSpec
from .topology import Topology


def build_quantization_config(spec: LoadSpec) -> BitsAndBytesConfig | None:
    """TRL's `get_quantization_config`: 4-bit computes in the load dtype (None means float32).

    Quant storage is its own field, as in TRL >= 0.26 (before, it silently followed `dtype`).
    """
    if spec.load_in_4bit:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_compute_dtype=spec.dtype,
            bnb_4bit_quant_type=spec.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=spec.use_bnb_nested_quant,
            bnb_4bit_quant_storage=spec.bnb_4bit_quant_storage,
        )
    if spec.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def kbit_device_map(topology: Topology) -> dict[str, int] | None:
    """TRL's `get_kbit_device_map` (removed in TRL 1.8): the whole model on this process's device."""
    return {"": topology.local_process_index} if topology.accelerator else None


def torch_dtype_argument(dtype: str | None) -> torch.dtype | str | None:
    """The recipe's mapping: "auto" and None pass through, a name becomes `torch.<name>`."""
    return dtype if dtype in ("auto", None) else getattr(torch, dtype)


def build_model_kwargs(spec: LoadSpec, topology: Topology | None = None) -> dict:
    """Every keyword `from_pretrained` receives for `spec`; `topology` defaults to this process's."""
    kwargs = {
        "revision": spec.model_revision,
        "attn_implementation": spec.attn_implementation,
        "dtype": torch_dtype_argument(spec.dtype),
        "trust_remote_code": spec.trust_remote_code,
    }
    quantization_config = build_quantization_config(spec)
    if quantization_config is not None:
        kwargs["device_map"] = kbit_device_map(topology or Topology.detect())
        kwargs["quantization_config"] = quantization_config
    return kwargs
