"""The DPO trainer's full load plan: which models TRL loads for a `LoadSpec`, with which keywords,
and what they cost in bytes, answered from `config.json` alone.

Describes **TRL 1.16** (`trainer/dpo_trainer.py`, `DPOTrainer.__init__`; `trainer/utils.py`
`create_model_from_path`; `scripts/dpo.py`), read line by line; each module quotes the lines of its
part: `loads` the policy and reference loads, `adapter` the LoRA adapter.

Older releases, as reported in the issue (reported, not verified): TRL < 1.8 loaded the reference
without the `device_map=None` rule and without the `dtype`/`attn_implementation` setdefaults (those
are new in 1.16); TRL 1.2 loaded no reference at all with `precompute_ref_log_probs`, FSDP included.

The modules, one job each: `options` holds `DPOOptions` and its validation, `loads` the plan
(`plan_dpo_loads`, `Load`, `DPOPlan`), `adapter` the LoRA adapter (targets, dtype, parameters),
`bill` the bytes of each load and the load peak, `trainer` the DPOTrainer the recipe builds
(shared by the conformance test and the DPO bill benchmark), `cli` the command line
(`python -m policyload.plan`). The names below are re-exported so that
`from policyload.plan import ...` keeps working. Importing the package imports neither torch nor
transformers; the functions that need them import them when called.
"""

from .adapter import PEFT_DEFAULT_TARGETS, AdapterPlan, adapter_parameters, lora_targets, plan_adapter
from .bill import bill
from .cli import main, parse_bytes
from .loads import ROLES, SOURCES, DPOPlan, FromPolicy, Load, plan_dpo_loads
from .options import DISTRIBUTED_TYPES, TRL_RELEASE, ZERO_STAGES, DPOOptions

__all__ = [
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
