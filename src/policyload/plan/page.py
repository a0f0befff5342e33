"""The trl#3168 table of docs/training-step.md: the configuration that ran out of memory on an 80 GB
A100 (Qwen2.5-0.5B shape, float32 load, batch 8, length 1024), planned three ways by
`plan_training_step`: with that era's defaults (no checkpointing, no mixed precision), with TRL
1.16's DPOConfig defaults (checkpointing, bf16 autocast), and the same with a bfloat16 load.

    python -m policyload.plan.page CONFIG_DIR        # a folder holding the Qwen2-0.5B-shape config.json
    python -m policyload.plan.page --realsize        # the same config from fixtures.realsize (repo root)

prints the table; `tests/test_train_plan.py` holds the page's table equal to it.
"""

from __future__ import annotations

import argparse
import sys

from ..spec import LoadSpec
from .options import DPOOptions
from .step import COMPONENTS, PHASES, TrainOptions, plan_training_step

DEVICE_MEMORY = 80 * 2**30
#: (column title, load dtype, training options)
CASES = (
    (
        "trl#3168: float32, no checkpointing, no autocast",
        "float32",
        TrainOptions(per_device_train_batch_size=8, max_length=1024, gradient_checkpointing=False, bf16=False),
    ),
    ("float32, DPOConfig 1.16 defaults", "float32", TrainOptions()),
    ("bfloat16, DPOConfig 1.16 defaults", "bfloat16", TrainOptions()),
)


def plans(config) -> list:
    """One `StepPlan` per column of `CASES`, full fine-tune with a reference (the recipe's defaults)."""
    return [
        plan_training_step(LoadSpec("qwen2-0.5b", dtype=dtype), DPOOptions(), train, config)
        for _, dtype, train in CASES
    ]


def table(config) -> str:
    """The Markdown table: GiB by component and by phase, the two peaks, the verdict for 80 GiB."""
    gib = 2**30
    planned = plans(config)
    lines = [
        "| GiB | " + " | ".join(title for title, _, _ in CASES) + " |",
        "|---|" + "---:|" * len(CASES),
    ]
    for name in COMPONENTS:
        lines.append(f"| {name} | " + " | ".join(f"{p.components[name] / gib:.2f}" for p in planned) + " |")
    for name in PHASES:
        lines.append(f"| phase: {name} | " + " | ".join(f"{p.phases[name] / gib:.2f}" for p in planned) + " |")
    lines.append("| **load peak** | " + " | ".join(f"{p.load_peak_bytes / gib:.2f}" for p in planned) + " |")
    lines.append("| **step peak** | " + " | ".join(f"{p.peak_bytes / gib:.2f}" for p in planned) + " |")
    lines.append(
        "| fits 80 GiB | "
        + " | ".join("yes" if max(p.peak_bytes, p.load_peak_bytes) <= DEVICE_MEMORY else "**no**" for p in planned)
        + " |"
    )
    lines.append(
        "| decided by | " + " | ".join(f"{p.deciding_component} ({p.peak_phase})" for p in planned) + " |"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m policyload.plan.page", description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", help="a folder holding the Qwen2-0.5B-shape config.json")
    parser.add_argument("--realsize", action="store_true", help="fixtures.realsize's qwen2-0.5b (from the repo root)")
    args = parser.parse_args(argv)
    if args.realsize == (args.config is not None):
        parser.error("give a config folder or --realsize; accepted: exactly one of them")
    if args.realsize:
        from fixtures.realsize import realsize_config

        config = realsize_config("qwen2-0.5b")
    else:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(args.config)
    sys.stdout.write(table(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
