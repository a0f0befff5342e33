"""Predicted bytes of a loaded policy, from the module layout alone (meta device, no weights).

Which modules bitsandbytes replaces follows transformers' integration (5.x
`integrations/bitsandbytes.replace_with_bnb_linear` and `quantizers/base.get_keys_to_not_convert`):
exact `nn.Linear` and GPT-2's `Conv1D` are quantized, except the output embedding (`lm_head`),
the module owning the model's last parameter, and tied weights. Everything else (embeddings,
norms, biases, `lm_head`) stays in the load dtype; buffers keep the dtype the model gives them.

Bytes per quantized weight (bitsandbytes 0.4x-0.5x `functional.quantize_4bit` / `int8_vectorwise_quant`):

* 4-bit (nf4, fp4): 0.5 byte packed + one fp32 absmax per 64-weight block = 0.5625 B/param,
  plus a 16-entry fp32 code table per layer.
* 4-bit nested ("double quant"): the absmax is itself quantized to uint8 in blocks of 256, with
  one fp32 absmax per such block: 0.5 + 1/64 + 4/(64*256) B/param, plus per layer a 16-entry and
  a 256-entry fp32 code table and one fp32 offset.
* 8-bit (LLM.int8): 1 byte per weight + one fp32 scale (`SCB`) per output row.

`model.get_memory_footprint()` is not used here: it counts parameters and buffers only, so it
misses the quantization state (absmax, code tables, SCB). `layout_tensor_bytes` counts them: a
layout check of the prediction against the loaded model's own tensors, never a memory measurement
(that is read from the machine: `policyload.measure.host_memory`, the CUDA allocator).

Resident and peak on the host (CPU loads), given the checkpoint (`checkpoint_layout`):

* resident = `total_bytes`, of which `file_backed_bytes` are unquantized tensors whose load dtype
  is the checkpoint's own: safetensors maps the file and those tensors stay its pages (no copy);
  the rest (`anon_bytes`) are private copies: converted dtypes, quantized weights and their state.
* peak = the whole checkpoint (mapped and read during the load; its pages stay resident while
  the mapping lives) + `anon_bytes` + `transient_bytes` (quantization: an fp32 working copy of the
  largest quantized layer). A float16 load of a bf16 checkpoint peaks at source + destination.
  On a GPU the device peak is `total_bytes + transient_bytes`.

One module per job, every public name re-exported here (`from policyload.memory_model import X`):

    quantized_bytes.py  block sizes and bytes per quantized layer (the arithmetic above)
    layout.py           the meta-device model, which modules are quantized, the checkpoint's
                        files (safetensors headers), the layout check of a loaded model
    prediction.py       Prediction, predict, load_dtype, quantization_token
    fit.py              headroom constants and fit_problem, to skip cases that cannot fit
"""

from .fit import DEVICE_HEADROOM_BYTES, HOST_HEADROOM_BYTES, fit_problem
from .layout import (
    checkpoint_layout,
    layout_tensor_bytes,
    meta_model,
    modules_not_quantized,
    parameter_count,
    quant_state_tensors,
    quantized_linears,
)
from .prediction import Prediction, load_dtype, predict, quantization_token
from .quantized_bytes import (
    BLOCKSIZE_4BIT,
    BLOCKSIZE_NESTED,
    BYTES_PER_QUANTIZED_WEIGHT,
    CODE_4BIT_ENTRIES,
    CODE_NESTED_ENTRIES,
    FP32,
    quantized_layer_bytes,
)

__all__ = [
    "BLOCKSIZE_4BIT",
    "BLOCKSIZE_NESTED",
    "BYTES_PER_QUANTIZED_WEIGHT",
    "CODE_4BIT_ENTRIES",
    "CODE_NESTED_ENTRIES",
    "DEVICE_HEADROOM_BYTES",
    "FP32",
    "HOST_HEADROOM_BYTES",
    "Prediction",
    "checkpoint_layout",
    "fit_problem",
    "layout_tensor_bytes",
    "load_dtype",
    "meta_model",
    "modules_not_quantized",
    "parameter_count",
    "predict",
    "quant_state_tensors",
    "quantization_token",
    "quantized_layer_bytes",
    "quantized_linears",
]
