"""The benchmark matrix: checkpoint x dtype x quantization, each case one `LoadSpec`.

Axis values are short readable tokens and a case id is those tokens joined:
`llama-bf16-4bit-nf4-nested`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from policyload import LoadSpec
from policyload.cases import DTYPE_TOKENS, QUANTIZATION_PRESETS

#: LoadSpec.dtype -> id token: the concrete load dtypes (None is transformers' default, not a choice).
DTYPES = {dtype: DTYPE_TOKENS[dtype] for dtype in ("auto", "float32", "float16", "bfloat16")}


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
        return LoadSpec(self.checkpoint.source, dtype=self.dtype, **QUANTIZATION_PRESETS[self.quantization])


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
        for quantization in QUANTIZATION_PRESETS
        if not (dtype == "auto" and quantization.startswith("4bit"))
    ]


def checkpoint_token(source: str) -> str:
    """Id token for a user checkpoint: the last path or hub-id part, lowercased, [a-z0-9.-] kept."""
    name = source.rstrip("/").rsplit("/", 1)[-1].lower()
    return re.sub(r"[^a-z0-9.-]+", "_", name).strip("_") or "checkpoint"
