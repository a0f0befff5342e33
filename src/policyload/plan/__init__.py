"""The DPO trainer's full load plan: which models TRL loads for a `LoadSpec`, with which keywords,
and what they cost in bytes, answered from `config.json` alone.

Describes **TRL 1.16** (`trainer/dpo_trainer.py`, `DPOTrainer.__init__`; `trainer/utils.py`
`create_model_from_path`; `scripts/dpo.py`), read line by line; each module quotes the lines of its
part: `loads` the policy and reference loads, `adapter` the LoRA adapter.

Older releases are not planned here: what each release of the TRL matrix (0.25.1 to 1.9.2) loads
differently was read off its source and is checked against it, each difference an exact `dpo-plan`
entry of `conformance/divergences.toml` with the line that explains it (`conformance/test_dpo_plan.py`
runs TRL's recipe and records every load). In short: before 0.29 the recipe loads the reference itself
(a policy instance gets a deep copy); 0.29-1.4 reload it without the policy's keywords; 1.5-1.9 pass
`device_map="auto"` on CPU too; in 0.29-1.15 an instance's reference is float32 with the default
attention (the `dtype`/`attn_implementation` setdefaults are new in 1.16); 1.2-1.14 load no reference
with `precompute_ref_log_probs`, FSDP included.

The modules, one job each: `options` holds `DPOOptions` and its validation, `loads` the plan
(`plan_dpo_loads`, `Load`, `DPOPlan`), `adapter` the LoRA adapter (targets, dtype, parameters),
`bill` the bytes of each load and the load peak, `trainer` the DPOTrainer the recipe builds
(shared by the conformance test and the DPO bill benchmark), `step` one training step's plan
(`plan_training_step`, `TrainOptions`, `StepPlan`), `cli` the command line
(`python -m policyload.plan`). The names below are re-exported so that
`from policyload.plan import ...` keeps working. Importing the package imports neither torch nor
transformers; the functions that need them import them when called.
"""

from .adapter import PEFT_DEFAULT_TARGETS, AdapterPlan, adapter_parameters, lora_targets, plan_adapter
from .bill import bill
from .cli import main, parse_bytes
from .loads import ROLES, SOURCES, DPOPlan, FromPolicy, Load, plan_dpo_loads
from .options import DISTRIBUTED_TYPES, TRL_RELEASE, ZERO_STAGES, DPOOptions
from .step import ATTENTION, COMPONENTS, OPTIMIZERS, PHASES, StepPlan, TrainOptions, plan_training_step

__all__ = [
    "ATTENTION",
    "COMPONENTS",
    "OPTIMIZERS",
    "PHASES",
    "StepPlan",
    "TrainOptions",
    "plan_training_step",
    "DISTRIBUTED_TYPES",
    "PEFT_DEFAULT_TARGETS",
    "ROLES",
    "SOURCES",
    "TRL_RELEASE",
    "ZERO_STAGES",
    "AdapterPlan",
    "DPOOptions",
    "DPOPlan",
    "FromPolicy",
    "Load",
    "adapter_parameters",
    "bill",
    "lora_targets",
    "main",
    "parse_bytes",
    "plan_adapter",
    "plan_dpo_loads",
]
