"""policyload: a TRL-independent reference for how TRL's DPO recipe loads its policy model.

The public names are imported on first use (PEP 562), so that the report and drift command
lines (`python -m policyload.report`, `python -m policyload.drift`) start without importing
torch and transformers.
"""

from importlib import import_module

_HOMES = {
    "CheckpointError": ".load",
    "load_policy": ".load",
    "LoadSpec": ".spec",
    "Topology": ".topology",
    "build_model_kwargs": ".kwargs",
    "plan_dpo_loads": ".plan",
    "build_quantization_config": ".kwargs",
    "kbit_device_map": ".kwargs",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'policyload' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name], __name__), name)
