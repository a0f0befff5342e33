"""Every model TRL's DPO recipe loads, recorded from a real construction on a tiny checkpoint, and
the plan (`plan_dpo_loads`) put in the same shape, so that the two compare key by key.

The shape, for TRL's run and for the plan alike:

    {"policy":    {"source": "disk", "kwargs": {...}}          # or {"source": "instance"}
     "reference": {"source": "disk" | "copy", "kwargs": {...}, "freed_after_precompute": bool},
     "adapter":   {"r", "alpha", "dropout", "targets", "dtype", "base_dtype"}}

A role that is not there is not loaded. Recorded loads take their role by order: the policy first
(unless the test passed an instance), then the reference; any further load is `load3`, `load4`, ...
and can only be an unlisted divergence. `kwargs` are made comparable (`trl_oracle.comparable_kwargs`).
A load is every *outermost* `from_pretrained` (the auto class's, not the model class's it calls)
and every outermost `deepcopy` of a model: nested calls are part of the load that made them.
"""

from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass

import torch

from .trainer_patches import is_model, trl_deepcopy_replaced
from .trl_oracle import comparable_kwargs
from .upstream_patches import _classes_with_own_from_pretrained, from_pretrained_replaced

#: The roles recorded loads take, in order (a test that passes the policy drops the first).
ROLES = ("policy", "reference")


@dataclass(frozen=True)
class Recorded:
    source: str  # "disk" (from_pretrained) or "copy" (deepcopy of a model)
    kwargs: dict | None


@contextlib.contextmanager
def every_load(run_here=None):
    """Record every outermost `from_pretrained` and model `deepcopy` made inside; yields the list.
    `run_here(kwargs)`, when given, is what the real call gets instead of the recorded keywords
    (a simulated accelerator's device map, which this CPU cannot load onto)."""
    import copy

    loads: list[Recorded] = []
    depth = [0]
    originals = {cls: cls.__dict__["from_pretrained"] for cls in _classes_with_own_from_pretrained()}
    original_deepcopy = copy.deepcopy

    def nested(record, call):
        if depth[0] == 0 and record is not None:
            loads.append(record)
        depth[0] += 1
        try:
            return call()
        finally:
            depth[0] -= 1

    def from_pretrained(cls, *args, **kwargs):  # the path positional, or by its name (LlamaFactory)
        owner = next(klass for klass in cls.__mro__ if klass in originals)
        passed = kwargs if run_here is None else run_here(dict(kwargs))
        call = lambda: originals[owner].__func__(cls, *args, **passed)  # noqa: E731
        return nested(Recorded("disk", dict(kwargs)), call)

    def deepcopy(value, *args, **kwargs):
        record = Recorded("copy", None) if is_model(value) else None
        return nested(record, lambda: original_deepcopy(value, *args, **kwargs))

    with from_pretrained_replaced(from_pretrained), trl_deepcopy_replaced(deepcopy):
        yield loads


def _dtype_name(dtypes: set):
    names = sorted(str(dtype).removeprefix("torch.") for dtype in dtypes)
    return names[0] if len(names) == 1 else tuple(names)


def observed_adapter(model) -> dict | None:
    """The LoRA adapter on the trainer's model as built: its settings, the modules it wraps (named
    as in the base model), the adapter's dtype and the dtype of the other floating parameters (the
    packed k-bit weights left out: their storage is the quantization's business)."""
    if not hasattr(model, "peft_config"):
        return None
    config = model.peft_config["default"]
    targets = sorted(
        name.removeprefix("base_model.model.")
        for name, module in model.named_modules()
        if "default" in getattr(module, "lora_A", {})
    )
    adapter, base = set(), set()
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            adapter.add(parameter.dtype)
        elif parameter.is_floating_point() and type(parameter).__name__ not in ("Params4bit", "Int8Params"):
            base.add(parameter.dtype)
    return {
        "r": config.r,
        "alpha": config.lora_alpha,
        "dropout": config.lora_dropout,
        "targets": tuple(targets),
        "dtype": _dtype_name(adapter),
        "base_dtype": _dtype_name(base),
    }


def observed(loads: list[Recorded], trainer, policy_given: bool) -> dict:
    """TRL's run in the shared shape (see the module docstring)."""
    roles = ROLES[1:] if policy_given else ROLES
    value = {"policy": {"source": "instance"}} if policy_given else {}
    for number, load in enumerate(loads):
        role = roles[number] if number < len(roles) else f"load{number + 1 + policy_given}"
        value[role] = (
            {"source": load.source}
            if load.kwargs is None
            else {"source": load.source, "kwargs": comparable_kwargs(load.kwargs)}
        )
    if "reference" in value:
        value["reference"]["freed_after_precompute"] = trainer.ref_model is None
    adapter = observed_adapter(trainer.model)
    if adapter is not None:
        value["adapter"] = adapter
    return value


def _resolve(kwargs: dict, policy) -> dict:
    """The plan's `FromPolicy` values read off the policy instance, as the trainer reads them."""
    from policyload.plan import FromPolicy

    resolved = {}
    for key, value in kwargs.items():
        if isinstance(value, FromPolicy):
            if policy is None:
                raise ValueError(f"the plan reads {value!r} for {key!r}, and no policy instance was given")
            value = operator.attrgetter(value.attribute)(policy)
        resolved[key] = value
    return resolved


def planned(plan, path: str, policy=None) -> dict:
    """The plan in the shared shape; `policy` is the instance given to the trainer, if any."""
    value = {}
    for load in plan.loads:
        entry = {"source": load.source}
        if load.kwargs is not None:
            entry["kwargs"] = comparable_kwargs(_resolve(load.kwargs, policy))
        if load.role == "reference":
            entry["freed_after_precompute"] = load.freed_after_precompute
        value[load.role] = entry
    if plan.adapter is not None:
        value["adapter"] = planned_adapter(plan, path)
    return value


def planned_adapter(plan, path: str) -> dict:
    """The plan's adapter: the modules `lora_targets` matches on a meta-device copy of the model,
    its dtype (None: the load dtype), and the load dtype for every other floating parameter."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from policyload.plan import lora_targets

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    adapter = plan.adapter
    return {
        "r": adapter.r,
        "alpha": adapter.alpha,
        "dropout": adapter.dropout,
        "targets": tuple(sorted(lora_targets(model, adapter.target_modules))),
        "dtype": adapter.dtype or plan.spec.dtype,
        "base_dtype": plan.spec.dtype,
    }


def flat(value: dict, prefix: str = "") -> dict:
    """The shared shape as `role.field` keys for the drift report (`reference.kwargs.dtype`,
    `policy.kwargs.quantization_config.bnb_4bit_quant_storage`); a `device_map` stays whole."""
    flattened = {}
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, dict) and key != "device_map":
            flattened.update(flat(item, path + "."))
        else:
            flattened[path] = item
    return flattened
