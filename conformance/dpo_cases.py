"""The cases of the DPO-plan level (`test_dpo_plan.py`): a dtype, a training mode, a distributed
type, how the policy is given, and (optionally) the machine TRL's device decider sees.

Here, not in the test module, so that `cases.all_case_ids` can check that every `dpo-plan` entry of
`divergences.toml` names cases that exist. Modes: `full` (full fine-tune), `precompute`
(`precompute_ref_log_probs`), `peft` (the recipe's `--use_peft`), `qlora` (`--use_peft` on a 4-bit
policy), `4bit-nopeft` (a 4-bit policy without PEFT, which both refuse with ValueError).
"""

from __future__ import annotations

from dataclasses import dataclass

from policyload import Topology
from policyload.cases import DTYPE_TOKENS
from policyload.plan import DPOOptions


@dataclass(frozen=True)
class DPOCase:
    dtype: str
    mode: str
    distributed_type: str = "NO"
    policy: str = "path"  # or "instance": a loaded model given to DPOTrainer
    #: None: this machine; a Topology: what TRL's device decider (`create_model_from_path`) sees.
    topology: Topology | None = None

    def __str__(self) -> str:
        machine = f"-{self.topology.token}" if self.topology else ""
        return f"dpo-{DTYPE_TOKENS[self.dtype]}-{self.mode}-{self.distributed_type}-{self.policy}{machine}"

    @property
    def fields(self) -> dict:
        """`ModelConfig` fields (LoadSpec names, plus `use_peft`)."""
        quantized = {"load_in_4bit": True} if self.mode in ("qlora", "4bit-nopeft") else {}
        return {"dtype": self.dtype, "use_peft": self.mode in ("peft", "qlora"), **quantized}

    @property
    def options(self) -> DPOOptions:
        return DPOOptions(
            use_peft=self.mode in ("peft", "qlora"),
            precompute_ref_log_probs=self.mode == "precompute",
            distributed_type=self.distributed_type,
            policy_as_instance=self.policy == "instance",
        )


CASES = [
    *[DPOCase(dtype, mode) for dtype in ("float32", "bfloat16") for mode in ("full", "precompute", "peft")],
    DPOCase("bfloat16", "qlora"),
    DPOCase("bfloat16", "4bit-nopeft"),  # refused: transformers' Trainer will not fine-tune a 4-bit model
    *[DPOCase("bfloat16", mode, policy="instance") for mode in ("full", "precompute", "peft")],
    DPOCase("float32", "full", policy="instance"),
    *[
        DPOCase("bfloat16", mode, dist)
        for dist in ("MULTI_GPU", "DEEPSPEED", "FSDP")
        for mode in ("full", "precompute")
    ],
    *[DPOCase("bfloat16", mode, dist, "instance") for dist, mode in (("MULTI_GPU", "full"), ("FSDP", "precompute"))],
    # On a GPU, FSDP keeps create_model_from_path's "auto" where MULTI_GPU and DEEPSPEED pass None.
    *[DPOCase("bfloat16", "full", dist, topology=Topology("cuda", 0)) for dist in ("MULTI_GPU", "FSDP")],
]


def dpo_case_ids() -> set[str]:
    return {str(case) for case in CASES}
