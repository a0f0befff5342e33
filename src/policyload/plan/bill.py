"""The bytes of a DPO load plan: each load's, the adapter's, their total and the load peak, per process.

Bytes are per process, for the models resident once the trainer is constructed, computed from
`config.json` alone on the meta device (`memory_model.predict`): what an accelerator holds, where
each model's tensors are its memory. (On a CPU host a load that keeps the checkpoint's dtype holds
pages of the mapped file instead; `benchmarks/test_dpo.py` measures that the figure still holds.)

The peak follows the order of TRL 1.16's `DPOTrainer.__init__`: the policy is loaded
(`create_model_from_path`, dpo_trainer.py:574), then wrapped by `get_peft_model` (:664; the adapter
is created in the base layer's dtype, then cast), then the reference is loaded (:927). So the first
load peaks alone, at the memory model's device peak (its result + the transient of quantizing one
layer), and the second load peaks on top of everything already resident: the policy and its adapter.

    peak = max(policy peak, policy + adapter, policy + adapter + reference peak)

Not in the peak: the activations of precomputing reference log-probs (`precompute_ref_log_probs`
runs the policy over the data set inside `__init__`; they depend on batch and sequence length, not
on the config) and the optimizer, which `__init__` does not create.
"""

from __future__ import annotations

from dataclasses import replace

from .adapter import adapter_parameters
from .loads import DPOPlan


def reference_spec(plan: DPOPlan):
    """The reference's `LoadSpec`: the policy's (dtype defaulting to the policy's), quantization
    dropped when the reference's keywords carry no `quantization_config`. None without a reference."""
    if plan.reference is None:
        return None
    if "quantization_config" not in plan.reference.kwargs and plan.spec.quantization != "none":
        return replace(plan.spec, load_in_4bit=False, load_in_8bit=False)
    return plan.spec


def bill(plan: DPOPlan, config) -> dict[str, int]:
    """Bytes per process once the trainer is constructed: policy, reference, adapter, total, and the
    load peak (module docstring). A reference freed after precomputing (FSDP) is billed: it is
    resident during construction."""
    import torch

    from ..memory_model import load_dtype, meta_model, predict

    dtype = load_dtype(plan.spec, config)
    policy = predict(plan.spec, config)
    adapter_bytes = 0
    if plan.adapter is not None:
        adapter_dtype = dtype if plan.adapter.dtype is None else getattr(torch, plan.adapter.dtype)
        model = meta_model(config, dtype, plan.spec.trust_remote_code)
        adapter_bytes = adapter_parameters(model, plan.adapter) * adapter_dtype.itemsize
    resident = policy.total_bytes + adapter_bytes
    peak = max(policy.device_peak_bytes, resident)
    reference_bytes = 0
    ref_spec = reference_spec(plan)
    if ref_spec is not None:
        reference = policy if ref_spec == plan.spec else predict(ref_spec, config)
        reference_bytes = reference.total_bytes
        peak = max(peak, resident + reference.device_peak_bytes)
    return {
        "policy_bytes": policy.total_bytes,
        "reference_bytes": reference_bytes,
        "adapter_bytes": adapter_bytes,
        "total_bytes": resident + reference_bytes,
        "peak_bytes": peak,
    }
