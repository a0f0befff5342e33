"""The training options that change what TRL's DPOTrainer loads, checked on construction.

Only the options that decide a load are here: whether PEFT wraps the policy (then no reference is
loaded), `precompute_ref_log_probs` (no reference, or one freed under FSDP), the accelerate
distributed type and ZeRO stage (the `device_map` rule, the adapter's dtype under ZeRO-3), whether
the policy is given as an instance, and the LoRA settings that size the adapter. Everything else
in `DPOConfig` leaves the loads alone.

A bad value raises ValueError at construction naming the field, the value and what is accepted, so
a planner or the command line fails before any model code is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The TRL release this plan describes.
TRL_RELEASE = "1.16"
#: accelerate `DistributedType` values whose load rules differ in DPOTrainer 1.16.
DISTRIBUTED_TYPES = ("NO", "MULTI_GPU", "DEEPSPEED", "FSDP")
ZERO_STAGES = (None, 0, 1, 2, 3)


def _reject(owner: str, name: str, value, accepted) -> ValueError:
    """The one wording of a refused field, shared by `DPOOptions` and the plan's dataclasses."""
    return ValueError(f"{owner}.{name}={value!r} is not accepted; accepted: {accepted}")


@dataclass(frozen=True)
class DPOOptions:
    """The training options that change what DPOTrainer loads. LoRA defaults are TRL's `ModelConfig`."""

    use_peft: bool = False
    precompute_ref_log_probs: bool = False
    distributed_type: str = "NO"
    deepspeed_zero_stage: int | None = None
    policy_as_instance: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    #: None: PEFT's default for the model type; "all-linear"; a regex string; or module names.
    lora_target_modules: tuple[str, ...] | str | None = None
    #: Ranks of the run (torchrun's WORLD_SIZE): the per-rank plan (`plan.sharding`) divides by it.
    world_size: int = 1
    #: DeepSpeed `zero_optimization.offload_optimizer` (stages 1-3) and `offload_param` (stage 3).
    offload_optimizer: bool = False
    offload_param: bool = False

    def __post_init__(self) -> None:
        flags = ("use_peft", "precompute_ref_log_probs", "policy_as_instance", "offload_optimizer", "offload_param")
        for name in flags:
            if not isinstance(getattr(self, name), bool):
                raise _reject("DPOOptions", name, getattr(self, name), "True or False")
        if self.distributed_type not in DISTRIBUTED_TYPES:
            raise _reject("DPOOptions", "distributed_type", self.distributed_type, DISTRIBUTED_TYPES)
        if self.deepspeed_zero_stage not in ZERO_STAGES:
            raise _reject("DPOOptions", "deepspeed_zero_stage", self.deepspeed_zero_stage, ZERO_STAGES)
        if self.deepspeed_zero_stage is not None and self.distributed_type != "DEEPSPEED":
            raise ValueError(
                f"DPOOptions.deepspeed_zero_stage={self.deepspeed_zero_stage!r} is not accepted with "
                f"distributed_type={self.distributed_type!r}; accepted: None unless distributed_type='DEEPSPEED'"
            )
        if isinstance(self.world_size, bool) or not isinstance(self.world_size, int) or self.world_size < 1:
            raise _reject("DPOOptions", "world_size", self.world_size, "an integer >= 1")
        if self.distributed_type == "NO" and self.world_size != 1:
            raise ValueError(
                f"DPOOptions.world_size={self.world_size!r} is not accepted with distributed_type='NO'; "
                "accepted: 1, or a distributed_type of MULTI_GPU, DEEPSPEED or FSDP"
            )
        if self.offload_optimizer and not (self.deepspeed_zero_stage or 0) >= 1:
            raise ValueError(
                f"DPOOptions.offload_optimizer=True is not accepted with deepspeed_zero_stage="
                f"{self.deepspeed_zero_stage!r}; accepted: deepspeed_zero_stage 1, 2 or 3"
            )
        if self.offload_param and self.deepspeed_zero_stage != 3:
            raise ValueError(
                f"DPOOptions.offload_param=True is not accepted with deepspeed_zero_stage="
                f"{self.deepspeed_zero_stage!r}; accepted: deepspeed_zero_stage 3"
            )
        if isinstance(self.lora_r, bool) or not isinstance(self.lora_r, int) or self.lora_r < 1:
            raise _reject("DPOOptions", "lora_r", self.lora_r, "an integer >= 1")
        if isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, (int, float)) or self.lora_alpha <= 0:
            raise _reject("DPOOptions", "lora_alpha", self.lora_alpha, "a number > 0")
        if not isinstance(self.lora_dropout, (int, float)) or not 0 <= self.lora_dropout < 1:
            raise _reject("DPOOptions", "lora_dropout", self.lora_dropout, "a number in [0, 1)")
        targets = self.lora_target_modules
        if isinstance(targets, list):
            # A list (as from argparse or JSON) is kept as a tuple: the options stay hashable and frozen.
            object.__setattr__(self, "lora_target_modules", targets := tuple(targets))
        if not (
            targets is None
            or (isinstance(targets, str) and targets)
            or (isinstance(targets, tuple) and targets and all(isinstance(t, str) and t for t in targets))
        ):
            raise _reject("DPOOptions", "lora_target_modules", targets, "None, 'all-linear', a regex, or module names")
