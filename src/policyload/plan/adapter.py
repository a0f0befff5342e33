"""The LoRA adapter DPOTrainer adds with `--use_peft`: its settings, its dtype, the linears it wraps,
and its parameter count.

`get_peft_model(model, LoraConfig(r, lora_alpha, target_modules, bias="none"))`. PEFT (read in peft
0.21.2, `tuners/lora/layer.py`, `tuners_utils.py`) creates `lora_A = Linear(in, r)` and
`lora_B = Linear(r, out)`, moves them to the base layer's dtype when that is floating, and
`cast_adapter_dtype` upcasts float16/bfloat16 adapters to float32 (`autocast_adapter_dtype=True`).
TRL 1.16 passes `autocast_adapter_dtype=False` for DeepSpeed ZeRO-3 with an unquantized model
(adapter stays in the load dtype), and for a quantized model casts every trainable parameter to
bfloat16 after `get_peft_model`. DPOTrainer 1.16 does not call `prepare_model_for_kbit_training`
(only the experimental CPO/ORPO trainers do), so a k-bit policy's unquantized parameters stay in the
load dtype. Target modules default to PEFT's `TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING` for
the model type (a copy of its decoder entries is `PEFT_DEFAULT_TARGETS`).

Matching targets and counting parameters need a model (a meta-device one will do), so torch and
transformers are imported inside those functions: planning alone stays import-light.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..spec import LoadSpec
from .options import DPOOptions

#: PEFT's default LoRA targets per model type (peft 0.21.2 `utils/constants.py`, decoder entries).
PEFT_DEFAULT_TARGETS = {
    "gpt2": ("c_attn",),
    "bloom": ("query_key_value",),
    "opt": ("q_proj", "v_proj"),
    "gptj": ("q_proj", "v_proj"),
    "gpt_neox": ("query_key_value",),
    "gpt_neo": ("q_proj", "v_proj"),
    "llama": ("q_proj", "v_proj"),
    "gpt_bigcode": ("c_attn",),
    "falcon": ("query_key_value",),
    "mistral": ("q_proj", "v_proj"),
    "mixtral": ("q_proj", "v_proj"),
    "phi": ("q_proj", "v_proj", "fc1", "fc2"),
    "gemma": ("q_proj", "v_proj"),
    "gemma2": ("q_proj", "v_proj"),
    "gemma3_text": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "qwen3": ("q_proj", "v_proj"),
}


@dataclass(frozen=True)
class AdapterPlan:
    """The LoRA adapter `get_peft_model` adds. `dtype` None: the policy's load dtype."""

    r: int
    alpha: int | float
    dropout: float
    target_modules: tuple[str, ...] | str | None
    dtype: str | None


def plan_adapter(spec: LoadSpec, options: DPOOptions) -> AdapterPlan | None:
    """The adapter for `options` (None without PEFT), its dtype by the rules above."""
    if not options.use_peft:
        return None
    return AdapterPlan(
        r=options.lora_r,
        alpha=options.lora_alpha,
        dropout=options.lora_dropout,
        target_modules=options.lora_target_modules,
        dtype=_adapter_dtype(spec, options),
    )


def _adapter_dtype(spec: LoadSpec, options: DPOOptions) -> str | None:
    if spec.quantization != "none":
        return "bfloat16"  # dpo_trainer.py: `if _is_quantized_model: ... param.data.to(torch.bfloat16)`
    if options.deepspeed_zero_stage == 3:
        return None  # autocast_adapter_dtype=False: the adapter stays in the base layer's dtype
    return "float32"  # PEFT's cast_adapter_dtype upcasts float16/bfloat16 (float32 stays float32)


def lora_targets(model, targets) -> dict[str, tuple[int, int]]:
    """{module name: (in_features, out_features)} of the linears PEFT wraps for `targets`.

    PEFT's matching (`check_target_module_exists`): a list matches a name equal to an entry or
    ending in "." + entry; a string is a full regex match; "all-linear" is every linear layer but
    the output embedding. Raises ValueError when nothing matches (PEFT does too).
    """
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    model_type = model.config.model_type
    if targets is None:
        if model_type not in PEFT_DEFAULT_TARGETS:
            raise ValueError(
                f"DPOOptions.lora_target_modules=None is not accepted for model type {model_type!r}: PEFT has no "
                f"default there; accepted: explicit module names or 'all-linear' "
                f"(defaults exist for {sorted(PEFT_DEFAULT_TARGETS)})"
            )
        targets = PEFT_DEFAULT_TARGETS[model_type]
    output = model.get_output_embeddings()
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            shape = (module.in_features, module.out_features)
        elif isinstance(module, Conv1D):
            shape = (module.weight.shape[0], module.nf)
        else:
            continue
        if targets == "all-linear":
            hit = module is not output
        elif isinstance(targets, str):
            hit = re.fullmatch(targets, name) is not None
        else:
            hit = any(name == t or name.endswith("." + t) for t in targets)
        if hit:
            found[name] = shape
    if not found:
        raise ValueError(
            f"DPOOptions.lora_target_modules={targets!r} matches no linear layer of this {model_type!r} model; "
            "accepted: names of its linear modules or 'all-linear'"
        )
    return found


def adapter_parameters(model, adapter: AdapterPlan) -> int:
    """LoRA parameters: r * (in + out) per targeted linear (lora_A: in x r, lora_B: r x out, no bias)."""
    shapes = lora_targets(model, adapter.target_modules).values()
    return sum(adapter.r * (fan_in + fan_out) for fan_in, fan_out in shapes)
