"""Bytes of one quantized linear layer, from bitsandbytes' block sizes alone (no torch needed).

Kept apart from the model walk (`layout`) so the arithmetic the package docstring derives can be
read and tested against bitsandbytes' own numbers on its own.
"""

from __future__ import annotations

import math

#: Weights per absmax block in bitsandbytes' 4-bit quantization (`blocksize=64` for LLM loads).
BLOCKSIZE_4BIT = 64
#: Absmax values per block of the nested (double) quantization.
BLOCKSIZE_NESTED = 256
#: Entries of the nf4/fp4 code table and of the nested uint8 code table (fp32 each).
CODE_4BIT_ENTRIES = 16
CODE_NESTED_ENTRIES = 256
FP32 = 4

#: Asymptotic bytes per quantized weight (large layers; per-row and per-layer terms excluded).
BYTES_PER_QUANTIZED_WEIGHT = {
    "4bit": 0.5 + FP32 / BLOCKSIZE_4BIT,
    "4bit-nested": 0.5 + 1 / BLOCKSIZE_4BIT + FP32 / (BLOCKSIZE_4BIT * BLOCKSIZE_NESTED),
    "8bit": 1.0,
}


def quantized_layer_bytes(out_features: int, in_features: int, quantization: str) -> tuple[int, int]:
    """(weight bytes, quantization-state bytes) of one quantized linear layer."""
    weights = out_features * in_features
    if quantization == "8bit":
        return weights, out_features * FP32
    blocks = math.ceil(weights / BLOCKSIZE_4BIT)
    packed = math.ceil(weights / 2)
    if quantization == "4bit":
        return packed, blocks * FP32 + CODE_4BIT_ENTRIES * FP32
    if quantization == "4bit-nested":
        nested_blocks = math.ceil(blocks / BLOCKSIZE_NESTED)
        state = blocks + nested_blocks * FP32 + (CODE_4BIT_ENTRIES + CODE_NESTED_ENTRIES) * FP32 + FP32
        return packed, state
    raise ValueError(f"quantization={quantization!r} is not accepted; accepted: ('8bit', '4bit', '4bit-nested')")
