"""`LoadSpec`: the loading fields of TRL's `ModelConfig`, validated once, on construction.

TRL validates almost none of these fields: a bad dtype or quant type travels to
`BitsAndBytesConfig` or `getattr(torch, ...)` and fails there (or not at all). The
reference rejects bad input up front, with the field, the value and what is accepted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

#: Values of `dtype` the DPO recipe understands: "auto" and None pass through to
#: `from_pretrained`, the others become `torch.<name>` (TRL `scripts/dpo.py`).
DTYPES = (None, "auto", "bfloat16", "float16", "float32")
#: bitsandbytes' 4-bit data types.
QUANT_TYPES = ("nf4", "fp4")
#: Storage dtypes `transformers.BitsAndBytesConfig` accepts for packed 4-bit weights (None = uint8).
QUANT_STORAGES = (None, "uint8", "int8", "float16", "bfloat16", "float32", "float64")


def _reject(field: str, value, accepted) -> ValueError:
    return ValueError(f"LoadSpec.{field}={value!r} is not accepted; accepted: {accepted}")


@dataclass(frozen=True)
class LoadSpec:
    """How to load a policy model: the fields of TRL's `ModelConfig` that reach `from_pretrained`.

    Defaults are those of `ModelConfig`, except `dtype`: None here, "float32" in TRL >= 0.27;
    `from_model_config` reads whatever the given config holds, so a spec built from a TRL config
    always carries that release's default.
    """

    model_name_or_path: str
    model_revision: str = "main"
    dtype: str | None = None
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    load_in_8bit: bool = False
    load_in_4bit: bool = False
    bnb_4bit_quant_type: str = "nf4"
    use_bnb_nested_quant: bool = False
    bnb_4bit_quant_storage: str | None = None

    def __post_init__(self) -> None:
        for name in ("model_name_or_path", "model_revision"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise _reject(name, value, "a non-empty string")
        for name in ("trust_remote_code", "load_in_8bit", "load_in_4bit", "use_bnb_nested_quant"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise _reject(name, value, "True or False")
        if self.attn_implementation is not None and (
            not isinstance(self.attn_implementation, str) or not self.attn_implementation
        ):
            raise _reject("attn_implementation", self.attn_implementation, "None or an attention implementation name")
        if self.dtype not in DTYPES:
            raise _reject("dtype", self.dtype, DTYPES)
        if self.bnb_4bit_quant_type not in QUANT_TYPES:
            raise _reject("bnb_4bit_quant_type", self.bnb_4bit_quant_type, QUANT_TYPES)
        if self.bnb_4bit_quant_storage not in QUANT_STORAGES:
            raise _reject("bnb_4bit_quant_storage", self.bnb_4bit_quant_storage, QUANT_STORAGES)
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError(
                "LoadSpec.load_in_4bit=True and LoadSpec.load_in_8bit=True are not accepted together; "
                "accepted: at most one of them True"
            )
        if self.load_in_4bit and self.dtype == "auto":
            # TRL passes "auto" on as bnb_4bit_compute_dtype and transformers does
            # getattr(torch, "auto"): an AttributeError deep inside BitsAndBytesConfig.
            raise ValueError(
                "LoadSpec.dtype='auto' is not accepted with load_in_4bit=True: 4-bit needs a concrete compute "
                f"dtype; accepted: {tuple(d for d in DTYPES if d != 'auto')}"
            )

    @property
    def quantization(self) -> str:
        """'4bit', '8bit' or 'none'."""
        return "4bit" if self.load_in_4bit else "8bit" if self.load_in_8bit else "none"

    @classmethod
    def from_model_config(cls, cfg, **overrides) -> LoadSpec:
        """Read any object with `ModelConfig`'s attribute names, from any TRL release.

        `torch_dtype` (TRL <= 0.22) is read where `dtype` is absent; `trust_remote_code`, which
        TRL 1.7 moved to the training config, comes from `overrides` where `cfg` lacks it.
        `overrides` win over `cfg`.
        """
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"LoadSpec.from_model_config got unknown fields {unknown}; accepted: {sorted(names)}")
        aliases = {"dtype": ("dtype", "torch_dtype")}
        values = {}
        for name in names:
            if name in overrides:
                values[name] = overrides[name]
                continue
            for attribute in aliases.get(name, (name,)):
                if hasattr(cfg, attribute):
                    values[name] = getattr(cfg, attribute)
                    break
        return cls(**values)
