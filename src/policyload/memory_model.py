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
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .spec import LoadSpec

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


@dataclass(frozen=True)
class Prediction:
    """Predicted resident bytes of one loaded model, by kind."""

    quantized_weight_bytes: int
    quant_state_bytes: int
    unquantized_parameter_bytes: int
    buffer_bytes: int
    quantized_parameters: int
    unquantized_parameters: int
    #: Of `total_bytes`, what stays pages of the mapped checkpoint on the host (see module docstring).
    file_backed_bytes: int = 0
    #: Bytes of the checkpoint's weight files (0 when no checkpoint folder was given).
    checkpoint_bytes: int = 0
    #: Short-lived working memory of the load beyond its result (quantization's fp32 copy of a layer).
    transient_bytes: int = 0

    @property
    def anon_bytes(self) -> int:
        """Private (anonymous) host bytes of a CPU load: everything not file-backed."""
        return self.total_bytes - self.file_backed_bytes

    @property
    def peak_bytes(self) -> int:
        """Predicted host peak of a CPU load: the mapped checkpoint + private copies + transients."""
        return self.checkpoint_bytes + self.anon_bytes + self.transient_bytes

    @property
    def device_peak_bytes(self) -> int:
        """Predicted device peak of a load to a GPU: the result + transients."""
        return self.total_bytes + self.transient_bytes

    @property
    def total_bytes(self) -> int:
        return (
            self.quantized_weight_bytes + self.quant_state_bytes + self.unquantized_parameter_bytes + self.buffer_bytes
        )

    @property
    def parameters(self) -> int:
        return self.quantized_parameters + self.unquantized_parameters

    def to_dict(self) -> dict:
        return {
            **asdict(self), "total_bytes": self.total_bytes, "parameters": self.parameters,
            "anon_bytes": self.anon_bytes, "peak_bytes": self.peak_bytes, "device_peak_bytes": self.device_peak_bytes,
        }


def quantization_token(spec: LoadSpec) -> str:
    """'none', '8bit', '4bit' or '4bit-nested': the memory layouts that differ."""
    if spec.load_in_4bit:
        return "4bit-nested" if spec.use_bnb_nested_quant else "4bit"
    return "8bit" if spec.load_in_8bit else "none"


def load_dtype(spec: LoadSpec, config) -> torch.dtype:
    """The dtype unquantized modules end up in: the spec's, or the checkpoint's for "auto"/None."""
    if spec.dtype in ("auto", None):
        checkpoint_dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
        return getattr(torch, checkpoint_dtype) if isinstance(checkpoint_dtype, str) else checkpoint_dtype
    return getattr(torch, spec.dtype)


def meta_model(config, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The causal LM for `config` on the meta device: layout and parameter count, no memory."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def parameter_count(config) -> int:
    """Unique parameters (tied embeddings counted once), computed on the meta device."""
    return sum(parameter.numel() for parameter in meta_model(config).parameters())


def modules_not_quantized(model: nn.Module) -> set[str]:
    """transformers' own `get_keys_to_not_convert` (output embedding, last parameter's module, tied
    keys), called rather than re-typed: its home moved from integrations.bitsandbytes in 5.0."""
    try:
        from transformers.quantizers.base import get_keys_to_not_convert
    except ImportError:
        from transformers.integrations.bitsandbytes import get_keys_to_not_convert
    return set(get_keys_to_not_convert(model))


def quantized_linears(model: nn.Module) -> dict[str, nn.Module]:
    """The modules bitsandbytes replaces: exact `nn.Linear` and `Conv1D`, minus `modules_not_quantized`."""
    from transformers.pytorch_utils import Conv1D

    skipped = modules_not_quantized(model)
    return {
        name: module
        for name, module in model.named_modules()
        if (type(module) is nn.Linear or isinstance(module, Conv1D))
        and not any(name == skip or name.startswith(skip + ".") for skip in skipped)
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


_SAFETENSORS_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64}


def checkpoint_layout(folder) -> tuple[int, torch.dtype | None, bool]:
    """(bytes of the weight files, the dtype holding most of their bytes, whether they are safetensors).

    Read from the safetensors headers (no weights read); for `.bin` checkpoints the dtype is None.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return sum(p.stat().st_size for p in folder.glob("*.bin")), None, False
    by_dtype: dict[str, int] = {}
    for path in files:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, entry in header.items():
            if name != "__metadata__":
                start, end = entry["data_offsets"]
                by_dtype[entry["dtype"]] = by_dtype.get(entry["dtype"], 0) + end - start
    dominant = max(by_dtype, key=by_dtype.get) if by_dtype else None
    return sum(p.stat().st_size for p in files), _SAFETENSORS_DTYPES.get(dominant), True


def predict(spec: LoadSpec, config, checkpoint=None) -> Prediction:
    """Predicted bytes of `load_policy(spec)` for a checkpoint with `config`.

    With `checkpoint` (its folder), the host split (file-backed / private) and the peak as well.
    """
    quantization = quantization_token(spec)
    dtype = load_dtype(spec, config)
    model = meta_model(config, dtype)
    quantized = quantized_linears(model) if quantization != "none" else {}
    quantized_weights = {id(module.weight) for module in quantized.values()}
    weight_bytes = state_bytes = quantized_parameters = 0
    for module in quantized.values():
        out_features, in_features = _linear_shape(module)
        weight, state = quantized_layer_bytes(out_features, in_features, quantization)
        weight_bytes += weight
        state_bytes += state
        quantized_parameters += out_features * in_features
    unquantized = [p for p in model.parameters() if id(p) not in quantized_weights]
    unquantized_bytes = sum(p.numel() * p.element_size() for p in unquantized)
    checkpoint_bytes, checkpoint_dtype, mapped = checkpoint_layout(checkpoint) if checkpoint else (0, None, False)
    largest = max((_linear_shape(m)[0] * _linear_shape(m)[1] for m in quantized.values()), default=0)
    return Prediction(
        quantized_weight_bytes=weight_bytes,
        quant_state_bytes=state_bytes,
        unquantized_parameter_bytes=unquantized_bytes,
        buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()),
        quantized_parameters=quantized_parameters,
        unquantized_parameters=sum(p.numel() for p in unquantized),
        file_backed_bytes=unquantized_bytes if mapped and dtype == checkpoint_dtype else 0,
        checkpoint_bytes=checkpoint_bytes,
        transient_bytes=largest * FP32,
    )


def _linear_shape(module: nn.Module) -> tuple[int, int]:
    # Conv1D stores its weight transposed (in, out); bitsandbytes transposes it before quantizing.
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    return module.nf, module.weight.shape[0]


def _quant_state_tensors(parameter) -> list[torch.Tensor]:
    tensors = []
    state = getattr(parameter, "quant_state", None)
    while state is not None:
        parts = (state.absmax, state.code, getattr(state, "offset", None))
        tensors += [t for t in parts if isinstance(t, torch.Tensor)]
        state = getattr(state, "state2", None)
    for name in ("SCB", "CB"):
        value = getattr(parameter, name, None)
        if isinstance(value, torch.Tensor):
            tensors.append(value)
    return tensors


def layout_tensor_bytes(model: nn.Module) -> int:
    """Storage bytes of the model's own tensors: parameters, buffers and bitsandbytes' quantization
    state. A layout check of the prediction (same bytes, same tensors), not a memory measurement:
    it cannot see file-backed vs private pages, the allocator, or the load's peak.

    Counted per storage, so tied weights and tensors sharing memory (`Int8Params.CB` is the
    weight itself) count once.
    """
    seen: dict[tuple[str, int], int] = {}
    for tensor in (*model.parameters(), *model.buffers()):
        for item in (tensor, *_quant_state_tensors(tensor)):
            storage = item.untyped_storage()
            seen[(str(item.device), storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


#: Headroom a load needs beyond the predicted peak: libraries loaded on first use and a forward
#: pass on the host, the CUDA context and workspace on a GPU. Rough, and only used to skip cases
#: that cannot fit, never to judge a measurement.
HOST_HEADROOM_BYTES = 512 * 1024**2
DEVICE_HEADROOM_BYTES = 1024**3


def fit_problem(what: str, needed_bytes: int, available_bytes: int) -> str | None:
    """A skip reason if `needed_bytes` exceed `available_bytes` of `what`, else None."""
    if needed_bytes <= available_bytes:
        return None
    gib = 1024**3
    return (
        f"does not fit: needs {needed_bytes / gib:.1f} GiB of {what} (memory model), "
        f"{available_bytes / gib:.1f} GiB available"
    )
