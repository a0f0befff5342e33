"""The prediction itself: what `load_policy(spec)` will hold, by kind, and its host and device peaks.

Combines the layout (`layout`) with the per-layer arithmetic (`quantized_bytes`); the resident /
peak rules it encodes are written out in the package docstring.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..spec import LoadSpec
from .layout import checkpoint_layout, meta_model, quantized_linears
from .quantized_bytes import FP32, quantized_layer_bytes


@dataclass(frozen=True)
class Prediction:
    """Predicted resident bytes of one loaded model, by kind."""

    quantized_weight_bytes: int
    quant_state_bytes: int
    unquantized_parameter_bytes: int
    buffer_bytes: int
    quantized_parameters: int
    unquantized_parameters: int
    #: Of `total_bytes`, what stays pages of the mapped checkpoint on the host (see package docstring).
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


def predict(spec: LoadSpec, config, checkpoint=None) -> Prediction:
    """Predicted bytes of `load_policy(spec)` for a checkpoint with `config`.

    With `checkpoint` (its folder), the host split (file-backed / private) and the peak as well.
    """
    quantization = quantization_token(spec)
    dtype = load_dtype(spec, config)
    model = meta_model(config, dtype, spec.trust_remote_code)
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
