"""The benchmark matrix: checkpoint x dtype x quantization, each case one `LoadSpec`.

Axis values are short readable tokens and a case id is those tokens joined:
`llama-bf16-4bit-nf4-nested`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from policyload import LoadSpec

#: LoadSpec.dtype -> id token.
DTYPES = {"auto": "auto", "float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
#: id token -> the LoadSpec fields of that quantization.
QUANTIZATIONS = {
    "none": {},
    "8bit": {"load_in_8bit": True},
    "4bit-nf4": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
    "4bit-fp4": {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4"},
    "4bit-nf4-nested": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "use_bnb_nested_quant": True},
}


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint to benchmark: `token` names it in ids, `source` is a path or cached hub id."""

    token: str
    source: str
    kind: str  # "tiny", "realsize" or "user"


@dataclass(frozen=True)
class Case:
    checkpoint: Checkpoint
    dtype: str
    quantization: str

    @property
    def id(self) -> str:
        return f"{self.checkpoint.token}-{DTYPES[self.dtype]}-{self.quantization}"

    @property
    def spec(self) -> LoadSpec:
        return LoadSpec(self.checkpoint.source, dtype=self.dtype, **QUANTIZATIONS[self.quantization])


def cases(checkpoints) -> list[Case]:
    """Every (checkpoint, dtype, quantization), except dtype "auto" with 4-bit.

    That combination is not a case: LoadSpec rejects it by design (4-bit needs a concrete compute
    dtype, and TRL would fail inside BitsAndBytesConfig), so it is an invalid input, not
    something this machine cannot run; a skip would misreport it.
    """
    return [
        Case(checkpoint, dtype, quantization)
        for checkpoint in checkpoints
        for dtype in DTYPES
        for quantization in QUANTIZATIONS
        if not (dtype == "auto" and quantization.startswith("4bit"))
    ]


def checkpoint_token(source: str) -> str:
    """Id token for a user checkpoint: the last path or hub-id part, lowercased, [a-z0-9.-] kept."""
    name = source.rstrip("/").rsplit("/", 1)[-1].lower()
    return re.sub(r"[^a-z0-9.-]+", "_", name).strip("_") or "checkpoint"
