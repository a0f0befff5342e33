"""The axes of the case matrix and the readable ids built from them: one home for both.

A case id is the axis tokens joined by '-', e.g. `bf16-4bit-nf4-nested-uint8`, so a failing
case reads without opening the code. A value outside an axis (the property tests feed invalid
ones on purpose) is spelled `axis=value`, e.g. `dtype=bf16-4bit-nf4-flat-defstore`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .spec import DTYPES, QUANT_STORAGES, QUANT_TYPES

DTYPE_TOKENS = {None: "nodtype", "auto": "auto", "float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
QUANTIZATIONS = ("none", "8bit", "4bit")
QUANTIZATION_TOKENS = {"none": "noquant", "8bit": "8bit", "4bit": "4bit", "4bit+8bit": "4bit+8bit"}
NESTED_TOKENS = {False: "flat", True: "nested"}
STORAGE_TOKENS = {None: "defstore", **{s: s for s in QUANT_STORAGES if s}}
#: The storage axis of the matrix: bitsandbytes' default and the dtypes people actually use.
MATRIX_STORAGES = (None, "uint8", "float16", "bfloat16", "float32")
#: The quantization choices people compare on cost (the benchmark axis): id token -> LoadSpec fields.
QUANTIZATION_PRESETS = {
    "none": {},
    "8bit": {"load_in_8bit": True},
    "4bit-nf4": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
    "4bit-fp4": {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4"},
    "4bit-nf4-nested": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "use_bnb_nested_quant": True},
}


def token(axis: str, tokens: dict, value) -> str:
    return tokens[value] if value in tokens else f"{axis}={value}"


@dataclass(frozen=True)
class ConfigCase:
    """One point of the `ModelConfig` loading space (valid or not)."""

    dtype: object = None
    quantization: str = "none"
    quant_type: object = "nf4"
    nested: object = False
    storage: object = None

    @property
    def id(self) -> str:
        return "-".join(
            (
                token("dtype", DTYPE_TOKENS, self.dtype),
                token("quant", QUANTIZATION_TOKENS, self.quantization),
                token("qtype", {q: q for q in QUANT_TYPES}, self.quant_type),
                token("nested", NESTED_TOKENS, self.nested),
                token("storage", STORAGE_TOKENS, self.storage),
            )
        )

    def model_config_fields(self) -> dict:
        """The fields of TRL's `ModelConfig` (and of `LoadSpec`) this case sets."""
        return {
            "dtype": self.dtype,
            "load_in_8bit": "8bit" in self.quantization,
            "load_in_4bit": "4bit" in self.quantization,
            "bnb_4bit_quant_type": self.quant_type,
            "use_bnb_nested_quant": self.nested,
            "bnb_4bit_quant_storage": self.storage,
        }

    @property
    def valid(self) -> bool:
        """Whether `LoadSpec` accepts this case (4-bit with dtype 'auto' is the one invalid product)."""
        return not (self.quantization == "4bit" and self.dtype == "auto")


def config_cases() -> list[ConfigCase]:
    """The full product dtype x quantization x quant type x nested x storage (300 cases)."""
    return [
        ConfigCase(*values)
        for values in itertools.product(DTYPES, QUANTIZATIONS, QUANT_TYPES, (False, True), MATRIX_STORAGES)
    ]


def load_cases() -> list[ConfigCase]:
    """Cases that differ in what gets loaded: the 4-bit options only where 4-bit is on (110 cases)."""
    cases = []
    for dtype in DTYPES:
        cases += [ConfigCase(dtype, "none"), ConfigCase(dtype, "8bit")]
        cases += [
            ConfigCase(dtype, "4bit", quant_type, nested, storage)
            for quant_type, nested, storage in itertools.product(QUANT_TYPES, (False, True), MATRIX_STORAGES)
        ]
    return cases
