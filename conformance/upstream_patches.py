"""Every patch the suite makes to torch, transformers, TRL or accelerate: one home.

The suite runs upstream code on machines it is not on (simulated GPUs, torchrun ranks, an XPU)
and stops it before any weight is read. Each patch is one context manager here; the first
paragraph of its docstring says what it stands in for and which upstream change breaks it.

`private_names()` lists the private upstream names the patches rely on, each with that
paragraph; `test_upstream_patches.py` fails with it as soon as one of them is gone upstream.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from unittest import mock

import torch
import transformers

from policyload import Topology

from .trl_release import FACTS

# --- torch: the accelerators ----------------------------------------------------------------


@contextlib.contextmanager
def cuda_available(available: bool):
    """Stands in for `torch.cuda.is_available()`, which TRL and transformers ask to decide a device
    map; public torch API, so only a TRL or transformers that asks something else would bypass it."""
    with mock.patch.object(torch.cuda, "is_available", lambda: available):
        yield


@contextlib.contextmanager
def accelerator_devices(accelerator: str, devices: int, current: int):
    """Stands in for `torch.<accelerator>.device_count()` and `.current_device()` (the one accelerate
    sets for the local rank), which the device-map balancing and the bnb quantizers read; public
    torch API, so only a transformers that reads the devices another way would bypass it."""
    module = getattr(torch, accelerator)
    with (
        mock.patch.object(module, "current_device", lambda: current),
        mock.patch.object(module, "device_count", lambda: devices),
    ):
        yield


@contextlib.contextmanager
def bnb_quantizers_see_xpu():
    """Stands in for `is_torch_xpu_available` in the module globals of transformers' bitsandbytes
    quantizers (`quantizer_bnb_4bit`, `quantizer_bnb_8bit`), read there when `device_map` is None;
    breaks if transformers stops importing it into those modules by that name."""
    with contextlib.ExitStack() as stack:
        for module in _bnb_quantizer_modules():
            stack.enter_context(mock.patch.object(module, "is_torch_xpu_available", lambda *a, **k: True))
        yield


def _bnb_quantizer_modules() -> list:
    import transformers.quantizers.quantizer_bnb_4bit as bnb_4bit
    import transformers.quantizers.quantizer_bnb_8bit as bnb_8bit

    return [bnb_4bit, bnb_8bit]


@contextlib.contextmanager
def simulated_machine(machine):
    """transformers sees `machine`'s accelerator (a `machine.Machine`), and the current device
    accelerate sets for the local rank (`PartialState.set_device`), which the bnb quantizers read
    when device_map is None."""
    import bitsandbytes  # noqa: F401  bitsandbytes and its transformers glue probe CUDA on import:
    import transformers.integrations.bitsandbytes  # noqa: F401  import them before CUDA is faked

    with contextlib.ExitStack() as stack:
        stack.enter_context(cuda_available(machine.accelerator == "cuda"))
        if machine.accelerator == "xpu":
            stack.enter_context(bnb_quantizers_see_xpu())
        if machine.accelerator is not None:
            stack.enter_context(accelerator_devices(machine.accelerator, machine.devices, machine.local_process_index))
        yield


# --- transformers: stop before the weights ---------------------------------------------------


class DeviceMapResolved(Exception):
    """Raised in place of reading the weights, with the device map `from_pretrained` resolved."""

    def __init__(self, device_map):
        super().__init__("device map resolved")
        self.device_map = device_map


def _raise_device_map(cls, model, *args, **kwargs):
    if "device_map" in kwargs:
        raise DeviceMapResolved(kwargs["device_map"])
    raise DeviceMapResolved(next(arg.device_map for arg in args if hasattr(arg, "device_map")))


@contextlib.contextmanager
def stop_at_weight_loading():
    """Stands in for `PreTrainedModel._load_pretrained_model`, the step that reads the weights: raise
    `DeviceMapResolved` with the device map it was given (a keyword up to transformers 4.x, a field
    of `LoadStateDictConfig` in 5.x); breaks if transformers renames that method or stops passing
    it the resolved device map."""
    with mock.patch.object(transformers.PreTrainedModel, "_load_pretrained_model", classmethod(_raise_device_map)):
        yield


def _classes_with_own_from_pretrained() -> list[type]:
    """Every loaded model class that defines `from_pretrained` itself. transformers gives each auto
    class its own copy of the function, so patching the base classes alone would miss
    `AutoModelForCausalLM` and record the inner call it makes (with `config=` added)."""
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    found, pending, seen = [], [transformers.PreTrainedModel, _BaseAutoModelClass], set()
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        pending.extend(cls.__subclasses__())
        if "from_pretrained" in vars(cls):
            found.append(cls)
    return found


@contextlib.contextmanager
def from_pretrained_replaced(replacement):
    """Stands in for `from_pretrained` of every model class and every auto class (found under
    `PreTrainedModel` and transformers' private `auto_factory._BaseAutoModelClass`) with
    `replacement(cls, path, *args, **kwargs)`; breaks if transformers renames or moves that base class."""
    with contextlib.ExitStack() as stack:
        for cls in _classes_with_own_from_pretrained():
            stack.enter_context(mock.patch.object(cls, "from_pretrained", classmethod(replacement)))
        yield


# --- TRL and accelerate: the topology TRL's code sees ----------------------------------------


def trl_device_decider():
    """TRL's function that decides `device_map`: `get_kbit_device_map` before 1.8, then the trainer's
    `create_model_from_path`."""
    if FACTS.has_kbit_device_map:
        from trl import get_kbit_device_map

        return get_kbit_device_map
    from trl.trainer.utils import create_model_from_path

    return create_model_from_path


class _FakeState:
    """Stands in for accelerate's `PartialState` as TRL reads it: the local rank and the device; any
    other attribute (`main_process_first`, used by TRL's data preparation in the same module) is this
    process's real state's."""

    def __init__(self, topology: Topology):
        self.local_process_index = topology.local_process_index
        index = topology.local_process_index if topology.accelerator else None
        self.device = torch.device(topology.accelerator or "cpu", index)

    def __getattr__(self, name):
        from accelerate import PartialState

        return getattr(PartialState(), name)


@contextlib.contextmanager
def trl_partial_state(function, topology: Topology):
    """Stands in for accelerate's `PartialState` in the module globals of TRL's `function` (the device
    decider reads the local rank and the device from it); breaks if TRL stops importing `PartialState`
    into that module by that name (the stand-in would then be ignored)."""
    with mock.patch.dict(function.__globals__, {"PartialState": lambda: _FakeState(topology)}):
        yield


@contextlib.contextmanager
def trl_xpu_available(function, available: bool):
    """Stands in for `is_torch_xpu_available` in the module globals of TRL's `function`, where that
    module imports it (`get_kbit_device_map` reads it, TRL < 1.8); breaks if TRL stops importing it
    into that module by that name (the stand-in would then be ignored)."""
    if "is_torch_xpu_available" not in function.__globals__:
        yield
        return
    with mock.patch.dict(function.__globals__, {"is_torch_xpu_available": lambda *a, **k: available}):
        yield


@contextlib.contextmanager
def simulated_topology(topology: Topology, *functions):
    """Make TRL's `functions` see `topology`: `torch.cuda.is_available` and, in each function's own
    module globals, `PartialState` and `is_torch_xpu_available`."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(cuda_available(topology.accelerator == "cuda"))
        for function in functions:
            stack.enter_context(trl_partial_state(function, topology))
            stack.enter_context(trl_xpu_available(function, topology.accelerator == "xpu"))
        yield


@contextlib.contextmanager
def trainer_sees_distributed_type(distributed_type: str):
    """Stands in for accelerate's distributed type while `DPOTrainer.__init__` (and only it) runs:
    `PartialState` keeps its fields in one shared dict (the Borg pattern), the private
    `PartialState._shared_state`, patched for the duration; breaks if accelerate renames that dict
    or stops keeping `distributed_type` in it."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType
    from trl import DPOTrainer

    original_init = DPOTrainer.__init__
    shared = {"distributed_type": DistributedType(distributed_type)}

    def init(self, *args, **kwargs):
        with mock.patch.dict(PartialState._shared_state, shared):
            return original_init(self, *args, **kwargs)

    with mock.patch.object(DPOTrainer, "__init__", init):
        yield


# --- DeepSpeed on CPU processes: the state the Trainer should have made -----------------------


def deepspeed_on_cpu():
    """Stands in for the process state `TrainingArguments` makes on its DeepSpeed path, which passes
    no `backend` to accelerate's `PartialState` (transformers 5.24 `training_args.py:1886-1888`, the
    `elif self.deepspeed:` branch: `use_deepspeed` and `timeout` only, never `ddp_backend`), so on CPU
    processes DeepSpeed's communicator never joins the torchrun group and each rank trains alone
    (seen: `ProcessGroupGloo::allgather ... expected length 2, got 1` at the first step). Made here
    instead: `PartialState(backend="gloo")` with `ACCELERATE_USE_DEEPSPEED=true` (so accelerate
    initialises `deepspeed.comm` over gloo, `accelerate/state.py:204-217`), to be used by a
    `DPOConfig(accelerator_config={"use_configured_state": True})`. Breaks (and
    `test_upstream_patches.test_deepspeed_branch_still_drops_the_backend` fails) once transformers
    passes `ddp_backend` on that branch: then `DPOConfig(ddp_backend="gloo")` alone is the fix.

    Returns the `PartialState`; call it before any `DPOConfig` is built, once per process."""
    import os

    from accelerate import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    return PartialState(backend="gloo")


def deepspeed_branch_backend(**training_arguments) -> object:
    """The `backend` that `TrainingArguments(**training_arguments)` (with `deepspeed` set) hands to
    accelerate's `PartialState` while it sets up its devices (`__post_init__` -> `_setup_devices`),
    read with `PartialState` replaced by a recorder that stops the construction there: the keyword's
    value, or None when none is passed (transformers 5.24: None on the DeepSpeed path)."""
    import transformers.training_args as training_args

    seen = {}

    class Recorded(Exception):
        pass

    class Recorder:
        _shared_state: dict = {}

        def __init__(self, **kwargs):
            seen.update(kwargs)
            raise Recorded

    with mock.patch.object(training_args, "PartialState", Recorder):
        try:
            training_args.TrainingArguments(**training_arguments)
        except Recorded:
            pass
    if not seen:
        raise AssertionError("TrainingArguments never asked PartialState for a state: the probe saw nothing")
    return seen.get("backend", None)


# --- FSDP2 on CPU processes: accelerate's device check, bypassed ------------------------------


def fsdp2_on_cpu(plugin_fields: dict):
    """Stands in for accelerate's choice of FSDP, which it makes only for accelerator process types
    (accelerate 1.15 `state.py:985-1016`: `distributed_type` becomes FSDP inside the branch for MULTI_GPU,
    MULTI_XPU, ...; MULTI_CPU is not among them, so a CPU run with an FSDP plugin silently trains as DDP).
    Applied here where the Trainer has made its Accelerator (`Trainer.create_accelerator_and_postprocess`):
    the state's `distributed_type` set to FSDP, an FSDP2 plugin with `plugin_fields` attached, and the
    Trainer's `is_fsdp_enabled` set, so TRL's `prepare_fsdp` wraps the reference and accelerate's
    `fsdp2_prepare_model` the policy. Breaks (and `test_sharded.test_accelerate_still_refuses_fsdp_on_cpu`
    fails) once accelerate attaches FSDP to CPU processes: then the plugin alone is the run.

    A context manager over the Trainer's method (public transformers API)."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    from transformers import Trainer

    original = Trainer.create_accelerator_and_postprocess

    def create(self):
        original(self)
        self.accelerator.state.distributed_type = DistributedType.FSDP
        self.accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(fsdp_version=2, **plugin_fields)
        self.is_fsdp_enabled = True

    return mock.patch.object(Trainer, "create_accelerator_and_postprocess", create)


def accelerate_distributed_type_with_fsdp_plugin_on_cpu() -> str:
    """What accelerate makes of an FSDP2 plugin in a CPU process (the upstream cause of `fsdp2_on_cpu`):
    the `distributed_type` of `Accelerator(cpu=True, fsdp_plugin=...)`, accelerate's state reset afterwards.
    Asked on a torchrun rank (MULTI_CPU: "MULTI_CPU" today, "FSDP" once accelerate allows it)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import FullyShardedDataParallelPlugin

    AcceleratorState._reset_state(True)
    try:
        plugin = FullyShardedDataParallelPlugin(fsdp_version=2, cpu_ram_efficient_loading=False)
        return str(Accelerator(cpu=True, fsdp_plugin=plugin).distributed_type.value)
    finally:
        AcceleratorState._reset_state(True)


# --- the registry of private names ------------------------------------------------------------


def _sentence(patch) -> str:
    """The first paragraph of a patch's docstring, on one line."""
    return " ".join(inspect.getdoc(patch).split("\n\n")[0].split())


def private_names() -> list[tuple[object, str, str]]:
    """(owner, attribute name, sentence) of every private upstream name a patch here relies on."""
    from accelerate import PartialState
    from transformers.models.auto import auto_factory

    decider_module = sys.modules[trl_device_decider().__module__]
    names = [
        (transformers.PreTrainedModel, "_load_pretrained_model", _sentence(stop_at_weight_loading)),
        (auto_factory, "_BaseAutoModelClass", _sentence(from_pretrained_replaced)),
        (PartialState, "_shared_state", _sentence(trainer_sees_distributed_type)),
        *[(module, "is_torch_xpu_available", _sentence(bnb_quantizers_see_xpu)) for module in _bnb_quantizer_modules()],
    ]
    if FACTS.decider_reads_partial_state:  # 1.8-1.9's `create_model_from_path` never asks
        names.append((decider_module, "PartialState", _sentence(trl_partial_state)))
    if FACTS.has_kbit_device_map:  # from 1.8, `create_model_from_path` decides and its module has no such name
        names.append((decider_module, "is_torch_xpu_available", _sentence(trl_xpu_available)))
    return names
