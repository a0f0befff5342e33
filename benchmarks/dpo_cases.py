"""The DPO bill cases: what TRL's DPOTrainer holds once constructed, per checkpoint x dtype x
quantization x setup.

Setups (`DPOOptions`): "reference" (full fine-tune: policy + reference, no PEFT), "peft" (the
recipe's LoRA defaults: r 16, alpha 32, PEFT's default targets), "precompute" (policy alone,
reference log-probs precomputed). A quantized policy without PEFT is refused by the plan (and by
transformers' Trainer), so "reference" and "precompute" are unquantized only; "peft" runs every
dtype x quantization. Ids start with `dpo-`, so `pytest benchmarks -k dpo` selects them:
`dpo-peft-qwen2-0.5b-bf16-4bit-nf4`.

Tiny cases use one architecture (llama): the trainer's construction, not the model family, is what
these cases add to the load benchmarks, and the tiny run must stay quick. Real-size cases use the
Qwen2-0.5B shape (the issue's real-size case).
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.matrix import DTYPES, Case, Checkpoint, cases
from policyload.plan import DPOOptions

SETUPS = {
    "reference": DPOOptions(),
    "peft": DPOOptions(use_peft=True),
    "precompute": DPOOptions(precompute_ref_log_probs=True),
}
#: The checkpoints the DPO cases run on, by kind.
DPO_CHECKPOINTS = {"tiny": ("llama",), "realsize": ("qwen2-0.5b",)}


@dataclass(frozen=True)
class DPOCase:
    load: Case
    setup: str

    @property
    def id(self) -> str:
        return f"dpo-{self.setup}-{self.load.id}"

    @property
    def spec(self):
        return self.load.spec

    @property
    def options(self) -> DPOOptions:
        return SETUPS[self.setup]

    @property
    def checkpoint(self) -> Checkpoint:
        return self.load.checkpoint

    @property
    def dtype(self) -> str:
        return self.load.dtype

    @property
    def quantization(self) -> str:
        return self.load.quantization


def dpo_cases(checkpoints) -> list[DPOCase]:
    """Every DPO case of `checkpoints` (those named in `DPO_CHECKPOINTS`), as the module docstring says."""
    chosen = [c for c in checkpoints if c.token in DPO_CHECKPOINTS.get(c.kind, ())]
    result = []
    for load in cases(chosen):
        assert load.dtype in DTYPES
        setups = ("reference", "peft", "precompute") if load.quantization == "none" else ("peft",)
        result += [DPOCase(load, setup) for setup in setups]
    return result
