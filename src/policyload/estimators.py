"""The memory estimates a user would reach for, computed offline for one load case, so each can be
held against the same measured figure (`benchmarks/test_load.py`, extra_info["memory_estimates"]).

* `get_memory_footprint`: transformers' `model.get_memory_footprint()` on the loaded model
  (parameters and buffers; bitsandbytes' quantization state is not counted). Read in the fresh
  process that measured the load.
* `accelerate`: what `accelerate estimate-memory` computes (accelerate 1.x
  `commands/estimate.py`: `create_empty_model` + `calculate_maximum_sizes`), run on the local
  config instead of the Hub's: the config's `AutoModel` (or its `auto_map` class) built in float32
  under `init_empty_weights`, its total size divided by 2 for float16 (accelerate has no
  bfloat16: the 16-bit figure is used), 4 for int8, 8 for int4.
* `hf-mem`: hf-mem (0.5.x) reads only the Hub: it fetches safetensors headers by HTTP Range
  requests from URLs it builds on https://huggingface.co, with no local-path option and no
  endpoint setting, so it cannot run on a local checkpoint. Its estimate is the sum of the
  tensors' bytes in those headers (`parse_safetensors_metadata(...).bytes_count`), with no load
  dtype or quantization option; the same sum over the local headers is reported as
  "hf-mem (its method, local headers)".
* `policyload`: `policyload.memory_model.predict(...).total_bytes`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

#: Bytes per element of the safetensors dtypes hf-mem knows (its `get_safetensors_dtype_bytes`).
SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E5M2": 1, "F8_E4M3": 1, "I8": 1, "U8": 1, "BOOL": 1,
}
HF_MEM = "hf-mem (its method, local headers)"


def safetensors_headers(folder) -> list[dict]:
    headers = []
    for path in sorted(Path(folder).glob("*.safetensors")):
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            headers.append(json.loads(handle.read(length)))
    return headers


def hf_mem_bytes(folder) -> int | None:
    """hf-mem's estimate of a checkpoint: the bytes of every tensor its safetensors headers list."""
    headers = safetensors_headers(folder)
    if not headers:
        return None
    total = 0
    for header in headers:
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for size in entry["shape"]:
                    count *= size
                total += count * SAFETENSORS_DTYPE_BYTES[entry["dtype"]]
    return total


def accelerate_dtype(spec) -> str:
    """The `accelerate estimate-memory --dtypes` choice matching a load case."""
    if spec.load_in_4bit:
        return "int4"
    if spec.load_in_8bit:
        return "int8"
    return "float32" if spec.dtype == "float32" else "float16"


def accelerate_fp32_total(config) -> int:
    """`calculate_maximum_sizes(create_empty_model(...))[0]`, on a local config (offline)."""
    import torch
    import transformers
    from accelerate import init_empty_weights
    from accelerate.utils import calculate_maximum_sizes

    constructor = transformers.AutoModel
    auto_map = getattr(config, "auto_map", None)
    if isinstance(auto_map, dict):
        name = next((key for key in auto_map if key.startswith("AutoModelFor")), None)
        constructor = getattr(transformers, name) if name else constructor
    with init_empty_weights():
        model = constructor.from_config(config, dtype=torch.float32)
    return int(calculate_maximum_sizes(model)[0])


def accelerate_bytes(spec, fp32_total: int) -> int:
    divisor = {"float32": 1, "float16": 2, "int8": 4, "int4": 8}[accelerate_dtype(spec)]
    return int(fp32_total / divisor)


def estimates(spec, config, folder, footprint: int | None, ours: int, fp32_total: int | None = None) -> dict:
    """{estimator: bytes} for one load case (None where an estimator cannot say)."""
    fp32_total = accelerate_fp32_total(config) if fp32_total is None else fp32_total
    return {
        "get_memory_footprint": footprint,
        "accelerate": accelerate_bytes(spec, fp32_total),
        HF_MEM: hf_mem_bytes(folder),
        "policyload": ours,
    }
