"""The training-step cases: one DPOTrainer optimizer step per setup x load dtype x attention x
gradient checkpointing x batch x length, planned (`policyload.plan.step`) and measured
(`policyload.measure.train_step`).

Not the full product: a base case per setup, then one axis changed at a time, so that each axis's
effect is one pair of cases. Setups: "reference" (full fine-tune, the reference model loaded),
"precompute" (full fine-tune, reference log-probs precomputed in `__init__`), "lora" (the recipe's
LoRA defaults; the reference is the policy with its adapter disabled), "qlora" (the same on a 4-bit
nf4 policy). Sizes: batch 1 x length 128 and batch 2 x length 256 (twice the rows and twice the
length: the linear terms grow 4x, the eager attention scores 8x).

A float32 full fine-tune of the Qwen2-0.5B shape (weights, reference, gradients and AdamW's two
moments: ~10 GB) does not fit the 6 GiB a case may use on the shared 2-core machine: float32 runs
with LoRA there, and the full fine-tunes run in bfloat16 (~5 GB with the reference). The tiny
checkpoint runs every case. Ids start with `train-`, so `pytest benchmarks -k train` selects them:
`train-lora-qwen2-0.5b-bf16-sdpa-gc-b1x128`.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.matrix import Checkpoint
from policyload import LoadSpec
from policyload.cases import DTYPE_TOKENS, QUANTIZATION_PRESETS
from policyload.plan import DPOOptions

SETUPS = {
    "reference": DPOOptions(),
    "precompute": DPOOptions(precompute_ref_log_probs=True),
    "lora": DPOOptions(use_peft=True),
    "qlora": DPOOptions(use_peft=True),
}
#: The checkpoints the training cases run on, by kind.
TRAIN_CHECKPOINTS = {"tiny": ("llama",), "realsize": ("qwen2-0.5b",)}
SIZES = ((1, 128), (2, 256))
ATTENTION_TOKENS = {"sdpa": "sdpa", "eager": "eager"}


@dataclass(frozen=True)
class TrainCase:
    checkpoint: Checkpoint
    setup: str
    dtype: str = "bfloat16"
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = True
    batch_size: int = 1
    max_length: int = 128

    @property
    def id(self) -> str:
        return (
            f"train-{self.setup}-{self.checkpoint.token}-{DTYPE_TOKENS[self.dtype]}-{self.attn_implementation}-"
            f"{'gc' if self.gradient_checkpointing else 'nogc'}-b{self.batch_size}x{self.max_length}"
        )

    @property
    def quantization(self) -> str:
        return "4bit-nf4" if self.setup == "qlora" else "none"

    @property
    def spec(self) -> LoadSpec:
        return LoadSpec(
            self.checkpoint.source, dtype=self.dtype, attn_implementation=self.attn_implementation,
            **QUANTIZATION_PRESETS[self.quantization],
        )

    @property
    def options(self) -> DPOOptions:
        return SETUPS[self.setup]

    @property
    def training_arguments(self) -> dict:
        """The `DPOConfig` fields of the case (the plan's `TrainOptions` carries the same names):
        `bf16=True` is DPOConfig's own default (autocast), said here because `build_dpo_trainer`'s
        own is the load bill's False; the optimizer is left at the Trainer's default."""
        return {
            "per_device_train_batch_size": self.batch_size,
            "max_length": self.max_length,
            "gradient_checkpointing": self.gradient_checkpointing,
            "bf16": True,
        }


def train_cases(checkpoints) -> list[TrainCase]:
    """Every training case of `checkpoints` (those named in `TRAIN_CHECKPOINTS`), as the module says."""
    chosen = [c for c in checkpoints if c.token in TRAIN_CHECKPOINTS.get(c.kind, ())]
    result = []
    for checkpoint in chosen:
        result += [
            TrainCase(checkpoint, "reference"),
            TrainCase(checkpoint, "precompute"),
            TrainCase(checkpoint, "lora"),
            TrainCase(checkpoint, "qlora"),
            TrainCase(checkpoint, "lora", dtype="float32"),
            TrainCase(checkpoint, "lora", gradient_checkpointing=False),
            TrainCase(checkpoint, "lora", attn_implementation="eager"),
            TrainCase(checkpoint, "lora", attn_implementation="eager", gradient_checkpointing=False),
            TrainCase(checkpoint, "lora", batch_size=SIZES[1][0], max_length=SIZES[1][1]),
            TrainCase(
                checkpoint, "lora", attn_implementation="eager", gradient_checkpointing=False,
                batch_size=SIZES[1][0], max_length=SIZES[1][1],
            ),
        ]
        if checkpoint.kind == "tiny":
            # A float32 full fine-tune: ~10 GB on the real-size shape (module docstring), tiny only.
            result.append(TrainCase(checkpoint, "reference", dtype="float32"))
    return result
