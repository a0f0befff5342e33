"""The patches that let the suite construct TRL's `DPOTrainer` for real, on this CPU, as it would be
constructed on a machine it is not on, and record every model it loads.

The continuation of `upstream_patches` for the DPO load plan (`test_dpo_plan.py`), under the same
rule: the first paragraph of each docstring says what the patch stands in for and which upstream
change breaks it. None of these names is private; the private ones the plan level relies on
(`PartialState._shared_state`, `auto_factory._BaseAutoModelClass`) are used through
`upstream_patches` and listed there.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from unittest import mock

import torch


@contextlib.contextmanager
def trl_deepcopy_replaced(replacement):
    """Stands in for `copy.deepcopy`, itself and as the `deepcopy` global of every imported TRL module
    that did `from copy import deepcopy` (TRL < 0.29 made the reference with `create_reference_model`,
    `deepcopy(model)` in `trl/models/modeling_base.py`); a TRL that copied a model another way
    (`model.to_empty`, `copy.copy`) would not be seen."""
    original = copy.deepcopy
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(copy, "deepcopy", replacement))
        for name, module in list(sys.modules.items()):
            if (name == "trl" or name.startswith("trl.")) and getattr(module, "deepcopy", None) is original:
                stack.enter_context(mock.patch.object(module, "deepcopy", replacement))
        yield


class _TrainingReached(Exception):
    """Raised by the stand-in `DPOTrainer.train`: the recipe stops there, nothing after it runs."""


@contextlib.contextmanager
def recipe_stops_before_training(constructed: list):
    """Stands in for `DPOTrainer.train`, which `trl.scripts.dpo.main` calls once the trainer is built:
    the trainer is appended to `constructed` and the recipe stops (no training, no `save_model`);
    breaks if the recipe stops calling `trainer.train()` (it would then train and save the tiny model)."""
    from trl import DPOTrainer

    def train(self, *args, **kwargs):
        constructed.append(self)
        raise _TrainingReached

    with mock.patch.object(DPOTrainer, "train", train):
        try:
            yield
        except _TrainingReached:
            pass


class _DistributedState:
    """accelerate's `PartialState` of this process, but for `distributed_type`."""

    def __init__(self, state, distributed_type):
        self._state, self.distributed_type = state, distributed_type

    def __getattr__(self, name):
        return getattr(self._state, name)


@contextlib.contextmanager
def args_see_distributed_type(args, distributed_type: str):
    """Stands in for accelerate's distributed type where DPOTrainer reads it to decide `device_map`
    (`args.distributed_state.distributed_type`, TRL 0.28 onwards): the training arguments' state
    answers `distributed_type` and delegates everything else (rank, barriers, device) to this plain
    CPU process; breaks if TRL reads the type elsewhere (then the case shows TRL's "NO" behaviour)."""
    from accelerate.utils import DistributedType

    args.device  # noqa: B018  the cached `_setup_devices` sets `args.distributed_state`
    real = args.distributed_state
    args.distributed_state = _DistributedState(real, DistributedType(distributed_type))
    try:
        yield
    finally:
        args.distributed_state = real


@contextlib.contextmanager
def trainer_sees_fsdp():
    """Stands in for an FSDP run as far as `DPOTrainer.__init__` asks: transformers' `Trainer` sets
    `is_fsdp_enabled` in `create_accelerator_and_postprocess` (from the accelerator state's
    `fsdp_plugin`), forced True after it here, and TRL's `prepare_fsdp` (imported into
    `trl.trainer.dpo_trainer`) returns the model unwrapped. Nothing is sharded; breaks if transformers
    decides `is_fsdp_enabled` elsewhere or TRL wraps the reference with another function."""
    import transformers
    from trl.trainer import dpo_trainer

    original = transformers.Trainer.create_accelerator_and_postprocess

    def create_accelerator_and_postprocess(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        self.is_fsdp_enabled = True
        return result

    with contextlib.ExitStack() as stack:
        stack.enter_context(
            mock.patch.object(
                transformers.Trainer, "create_accelerator_and_postprocess", create_accelerator_and_postprocess
            )
        )
        if hasattr(dpo_trainer, "prepare_fsdp"):
            stack.enter_context(mock.patch.object(dpo_trainer, "prepare_fsdp", lambda model, accelerator: model))
        yield


def is_model(value) -> bool:
    """What a recorded `deepcopy` must copy to count as a load: a torch module (a config, a dict of
    arguments or a tensor is copied all the time and loads nothing)."""
    return isinstance(value, torch.nn.Module)
