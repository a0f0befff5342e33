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


# --- training-step peers ------------------------------------------------------------------------
# What a user would hold a DPO training step's peak against, beside `policyload.plan.plan_training_step`
# (docs/training-step.md). Each returns bytes per process for the policy alone, or None with a reason.


def accelerate_training_bytes(spec, train, fp32_total: int) -> int | None:
    """`accelerate estimate-memory`'s "Training using Adam" column (accelerate 1.15
    `commands/estimate.py`: `gather_data` calls `estimate_training_usage(total_size, dtype)` on the
    float32 size of the meta model, `estimate_command` prints `max(...)` of its model / gradients /
    optimizer / step sizes). The precision is "float32" for a float32 run without autocast, else the
    16-bit one: accelerate's mixed precision keeps float32 weights, so a 16-bit load is billed as
    mixed precision too. None for int8/int4 (accelerate prints N/A).

    Leaves out: activations, the LM head's logits, the reference model, LoRA (it bills the full
    model as trainable), batch size and sequence length (its figure is for "a batch size of 1").
    """
    from accelerate.commands.estimate import estimate_training_usage

    if spec.quantization != "none":
        return None
    mixed = train.bf16 or train.fp16 or spec.dtype != "float32"
    precision = ("float16" if train.fp16 else "bfloat16") if mixed else "float32"
    usage = max(estimate_training_usage(fp32_total, precision).values())
    return None if usage == -1 else int(usage)


def deepspeed_model_states_bytes(total_params: int, largest_layer_params: int, stage: int = 2):
    """DeepSpeed's "model states" per GPU for one GPU without offload: `(bytes, None)`, or
    `(None, reason)` when deepspeed cannot be imported (it is not a dependency of this project).

    Calls DeepSpeed's own `estimate_zero2_model_states_mem_needs` (`runtime/zero/stage_1_and_2.py`:
    `4 * params + 16 * params / gpus` without offload) or `estimate_zero3_model_states_mem_needs`
    (`runtime/zero/stage3.py`: `4 * largest_layer + 18 * params / gpus`).

    Leaves out: activations, logits, the reference model, LoRA (every parameter trainable),
    quantization, and the dtype of the load (it assumes fp16 weights with fp32 master copies).
    """
    try:
        if stage == 3:
            from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

            _, gpu, _ = estimate_zero3_model_states_mem_needs(
                total_params, largest_layer_params, num_gpus_per_node=1, cpu_offload=False, cpu_offload_params=False
            )
        else:
            from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

            _, gpu = estimate_zero2_model_states_mem_needs(total_params, num_gpus_per_node=1, cpu_offload=False)
    except ImportError as error:
        return None, f"deepspeed is not installed ({error})"
    return int(gpu), None


def korthikanti_bytes(config, train, parameters: int) -> int:
    """The formula most users quote (Korthikanti et al. 2022, arXiv 2205.05198, section 4;
    EleutherAI "Transformer Math 101"): 16 bytes per parameter (16-bit weights and gradients, fp32
    master weights and Adam's two moments) plus activations of `s b h (34 + 5 a s / h)` bytes per
    layer, or `2 s b h` per layer with full recomputation (checkpointing). Here `b` is DPO's
    concatenated batch (2 x per_device_train_batch_size) and `s` max_length.

    Leaves out: the reference model and its forward, the LM head's logits (the paper's `4 s b v`
    term is left out by most who quote the per-layer formula, and so here), that the formula counts
    GPT-style blocks with dropout masks and a 4h MLP (SwiGLU, grouped KV heads and no dropout change
    the coefficients), float32 activations, LoRA (every parameter trainable).
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    s, b, h = train.max_length, train.rows, text.hidden_size
    a, layers = text.num_attention_heads, text.num_hidden_layers
    if train.gradient_checkpointing:
        per_layer = 2 * s * b * h
    else:
        per_layer = s * b * h * (34 + 5 * a * s / h)
    return int(16 * parameters + layers * per_layer)


def training_estimates(spec, train, config, fp32_total: int | None = None) -> dict:
    """{estimator: bytes or None} for one training case, policy alone, beside the plan's step peak."""
    from .memory_model import meta_model

    model = meta_model(config, trust_remote_code=spec.trust_remote_code)
    parameters = sum(p.numel() for p in model.parameters())  # tied weights once (`parameters()` dedups)
    largest_layer = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    fp32_total = accelerate_fp32_total(config) if fp32_total is None else fp32_total
    zero2, zero2_reason = deepspeed_model_states_bytes(parameters, largest_layer, stage=2)
    zero3, zero3_reason = deepspeed_model_states_bytes(parameters, largest_layer, stage=3)
    return {
        "accelerate (training using Adam)": accelerate_training_bytes(spec, train, fp32_total),
        "deepspeed zero2 model states": zero2,
        "deepspeed zero3 model states": zero3,
        "Korthikanti / Transformer Math 101": korthikanti_bytes(config, train, parameters),
        "reasons": {name: reason for name, reason in (("deepspeed", zero2_reason or zero3_reason),) if reason},
    }
