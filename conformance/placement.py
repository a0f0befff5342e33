"""Where every parameter and buffer of the policy lands, under the recipe contract and under TRL.

TRL 1.8 removed `get_kbit_device_map` ({"": local_process_index} for k-bit loads on CUDA/XPU),
saying it never changes where the model lands. From 1.5 the recipe loads through the trainer:
`create_model_from_path` defaults `device_map` to "auto" (1.5-1.9 always; from 1.10 None on
CPU/MPS) and `DPOTrainer` sets it to None when distributed (MULTI_GPU, DEEPSPEED). This module
measures what those decisions do to each tensor, so the claim is proved or refuted case by case.

A placement is `{name: (device, dtype)}` over `named_parameters()` and `named_buffers()`.

Two ways to get one:

- for real, on this machine: load and read the tensors (`placement(model)`);
- simulated, for a `Machine` (machine.py) this process is not on (N GPUs, torchrun ranks), with
  the patches of `upstream_patches`:
  1. the keywords: TRL's own recipe runs with `from_pretrained` intercepted (`trl_oracle`), its
     device decision seeing the simulated machine and, when distributed, `DPOTrainer` seeing the
     simulated `distributed_type`;
  2. the device map: transformers' own `from_pretrained` runs with those keywords, stopped at
     `PreTrainedModel._load_pretrained_model`, before any weight is read; what it resolved there
     ("auto" through `get_balanced_memory`/`infer_auto_device_map`, None through the bnb
     quantizer's `update_device_map`) is mapped onto tensor names by transformers'
     `expand_device_map`. The simulated GPUs are declared with `max_memory`; the one difference
     from a real run is that transformers then treats the memory as user-set, which only changes
     a 10% reserve on a single GPU and on the CPU (`get_balanced_memory`), nothing for models that
     fit, as the tiny checkpoints do;
  3. the "train" stage: the transformers `Trainer` moves a model to `args.device` only when it
     has no `hf_device_map` and is not bitsandbytes-quantized (transformers 5.24 `trainer.py`,
     "Distributed strategy" and "Device placement"; `_move_model_to_device` skips a model with
     `hf_device_map`). That rule is re-stated here (`trainer_moves`), not run: it cannot run
     without the devices.
  Dtypes in a simulated placement are those of a real load on this machine with the same
  keywords (device_map aside): the simulation decides devices only, real runs compare dtypes.
"""

from __future__ import annotations

import contextlib
import json

import torch

from policyload import Topology, build_model_kwargs

from . import trl_oracle
from .cases import STAGES
from .machine import Machine
from .trl_release import FACTS
from .upstream_patches import (
    DeviceMapResolved,
    simulated_machine,
    stop_at_weight_loading,
    trainer_sees_distributed_type,
)


def placement(model: torch.nn.Module) -> dict[str, tuple[str, str]]:
    """`{name: (device, dtype)}` of every parameter and buffer, e.g. `('cuda:0', 'bfloat16')`."""
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    return {name: (str(tensor.device), str(tensor.dtype).removeprefix("torch.")) for name, tensor in tensors}


# --- the keywords ---------------------------------------------------------------------------


def reference_kwargs(spec, machine: Machine) -> dict:
    """The recipe contract's keywords (`build_model_kwargs`) for `machine`."""
    return build_model_kwargs(spec, machine.topology)


def trl_kwargs(path: str, fields: dict, dataset_dir, output_dir, machine: Machine | None) -> dict:
    """The keywords TRL's own recipe passes to `from_pretrained` on `machine`, as passed (not made
    comparable): `trl_oracle.recipe_kwargs(..., raw=True)`. When `machine` is distributed,
    `DPOTrainer.__init__` (and only it) sees its `distributed_type`.

    `machine=None`: this process as it really is (its accelerator, its local rank and its real
    accelerate state, e.g. under torchrun); nothing about distribution is simulated.
    """
    topology = machine.topology if machine else Topology.detect()
    distributed = machine is not None and machine.processes > 1
    trainer = trainer_sees_distributed_type(machine.distributed_type) if distributed else contextlib.nullcontext()
    with trainer:
        return trl_oracle.recipe_kwargs(path, fields, dataset_dir, output_dir, topology, raw=True)


# --- real loads -----------------------------------------------------------------------------


def load_as_trl(path: str, kwargs: dict):
    """Load with TRL's keywords the way the installed release's recipe does: through
    `create_model_from_path` from 1.5 (it keeps a given `device_map` and `dtype`), else
    `AutoModelForCausalLM.from_pretrained` as `scripts/dpo.py` did."""
    if FACTS.recipe == "trainer":
        from trl.trainer.utils import create_model_from_path

        return create_model_from_path(path, **kwargs)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


_CPU_DTYPES: dict[str, dict] = {}


def _dtypes_of_real_load(path: str, kwargs: dict) -> dict[str, str]:
    """Tensor name -> dtype of a real load on this machine with `kwargs`, device_map left out."""
    from transformers import AutoModelForCausalLM

    kwargs = {key: value for key, value in kwargs.items() if key not in ("device_map", "max_memory")}
    key = json.dumps([path, trl_oracle.comparable_kwargs(kwargs)], sort_keys=True, default=str)
    if key not in _CPU_DTYPES:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        _CPU_DTYPES[key] = {name: dtype for name, (_, dtype) in placement(model).items()}
        del model
    return _CPU_DTYPES[key]


# --- simulated loads ------------------------------------------------------------------------


def resolved_device_map(path: str, kwargs: dict, machine: Machine):
    """The device map transformers' `from_pretrained` resolves for `kwargs` on `machine`: a
    module -> device dict, or None (the model is built on the CPU)."""
    from transformers import AutoModelForCausalLM

    kwargs = dict(kwargs)
    if machine.devices:
        kwargs["max_memory"] = machine.max_memory
    with simulated_machine(machine), stop_at_weight_loading():
        try:
            AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except DeviceMapResolved as resolved:
            return resolved.device_map
    raise AssertionError("from_pretrained returned without reaching _load_pretrained_model")


def _expand_device_map(device_map: dict, names: list[str]) -> dict:
    try:  # transformers >= 5
        from transformers.integrations.accelerate import expand_device_map
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import expand_device_map
    return expand_device_map(device_map, names)


def _device_name(device, machine: Machine) -> str:
    """A device-map value as `str(tensor.device)` spells it: 0 -> 'cuda:0'."""
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        return f"{machine.accelerator}:{int(device)}"
    return str(torch.device(device)) if device != "disk" else "disk"


def trainer_moves(device_map, kwargs: dict) -> bool:
    """Whether transformers' `Trainer.__init__` moves the model to `args.device`: only a model
    without `hf_device_map` (loaded with device_map None) that is not bitsandbytes-quantized."""
    return device_map is None and kwargs.get("quantization_config") is None


def simulated_placement(path: str, kwargs: dict, machine: Machine, stage: str) -> dict[str, tuple[str, str]]:
    """Where each tensor lands on `machine` when loaded with `kwargs`: right after
    `from_pretrained` (stage "load") or after the Trainer has placed the model ("train")."""
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r} is not accepted; accepted: {STAGES}")
    dtypes = _dtypes_of_real_load(path, kwargs)
    device_map = resolved_device_map(path, kwargs, machine)
    if stage == "train" and trainer_moves(device_map, kwargs):
        devices = dict.fromkeys(dtypes, machine.training_device)
    elif device_map is None:
        devices = dict.fromkeys(dtypes, "cpu")
    else:
        expanded = _expand_device_map(device_map, list(dtypes))
        devices = {name: _device_name(device, machine) for name, device in expanded.items()}
    return {name: (devices[name], dtype) for name, dtype in dtypes.items()}

