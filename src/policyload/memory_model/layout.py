"""What the bytes are laid out as: the model's modules on the meta device, which of them
bitsandbytes quantizes, the checkpoint's files (from their headers), and a loaded model's tensors.

Everything here reads a layout and never measures memory: the meta model holds no weights, the
checkpoint is read by its safetensors headers only, and `layout_tensor_bytes` sums what the
loaded model's tensors say they hold (the machine's own readings live in `policyload.measure`).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from torch import nn


def meta_model(config, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False) -> nn.Module:
    """The causal LM for `config` on the meta device: layout and parameter count, no memory. A config
    naming its own code (`auto_map`) is built from that code only with `trust_remote_code=True`."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)


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


def quant_state_tensors(parameter) -> list[torch.Tensor]:
    """bitsandbytes' quantization state hung on `parameter` (absmax, code tables, offset, nested
    state; `SCB`/`CB` of 8-bit): tensors that `parameters()` and `buffers()` do not list.

    Public because `policyload.measure.host_memory` walks the same tensors to find live storages.
    """
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
        for item in (tensor, *quant_state_tensors(tensor)):
            storage = item.untyped_storage()
            seen[(str(item.device), storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())
