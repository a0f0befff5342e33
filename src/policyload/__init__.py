"""policyload: a TRL-independent reference for how TRL's DPO recipe loads its policy model."""

from .kwargs import build_model_kwargs, build_quantization_config, kbit_device_map
from .load import CheckpointError, load_policy
from .spec import LoadSpec
from .topology import Topology

__all__ = [
    "CheckpointError",
    "LoadSpec",
    "Topology",
    "build_model_kwargs",
    "build_quantization_config",
    "kbit_device_map",
    "load_policy",
]
