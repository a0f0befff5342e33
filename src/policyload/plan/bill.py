"""The bytes of a DPO load plan: each load's, the adapter's, their total and a peak, per process.

Bytes are per process, for the models resident once the trainer is constructed, computed from
`config.json` alone on the meta device (`memory_model`). The peak is a PROVISIONAL estimate until
`memory_model` predicts one: policy + reference + adapter + the largest single parameter in the load
dtype (transformers materializes and converts one tensor at a time).
"""

from __future__ import annotations

from dataclasses import replace

from .adapter import adapter_parameters
from .loads import DPOPlan


def bill(plan: DPOPlan, config) -> dict[str, int]:
    """Bytes per process once the trainer is constructed: policy, reference, adapter, total, peak.

    A reference freed after precomputing (FSDP) is billed: it is resident during construction.
    `peak_bytes` is PROVISIONAL: total + the largest single parameter in the load dtype.
    """
    import torch

    from ..memory_model import load_dtype, meta_model, predict

    dtype = load_dtype(plan.spec, config)
    policy = predict(plan.spec, config)
    reference_bytes = 0
    if plan.reference is not None:
        # The reference's keywords equal the policy's (dtype defaulting to the policy's), quantization aside.
        reference_spec = plan.spec
        if "quantization_config" not in plan.reference.kwargs and plan.spec.quantization != "none":
            reference_spec = replace(plan.spec, load_in_4bit=False, load_in_8bit=False)
        reference_bytes = (
            policy.total_bytes if reference_spec == plan.spec else predict(reference_spec, config).total_bytes
        )
    model = meta_model(config, dtype)
    adapter_bytes = 0
    if plan.adapter is not None:
        adapter_dtype = dtype if plan.adapter.dtype is None else getattr(torch, plan.adapter.dtype)
        adapter_bytes = adapter_parameters(model, plan.adapter) * adapter_dtype.itemsize
    largest = max((p.numel() for p in model.parameters()), default=0) * dtype.itemsize
    total = policy.total_bytes + reference_bytes + adapter_bytes
    return {
        "policy_bytes": policy.total_bytes,
        "reference_bytes": reference_bytes,
        "adapter_bytes": adapter_bytes,
        "total_bytes": total,
        "peak_bytes": total + largest,
    }
