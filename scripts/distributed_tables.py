"""The two tables of docs/distributed.md, regenerated: `python scripts/distributed_tables.py`.

1. planned: GiB per rank for a full DPO fine-tune of the Llama-3.1-8B shape (bf16) on 8 GPUs, each
   engine a column (`policyload.plan.sharding.engines_table`);
2. measured: what DeepSpeed held per rank on 2 CPU ranks for the tiny odd Llama, read from the
   committed recording of `conformance/sharded_run.py` (`conformance/recorded/sharded-2rank/`),
   beside the plan for the same run.

`tests/test_sharding_plan.py` holds docs/distributed.md equal to this output.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "conformance" / "recorded" / "sharded-2rank"


def planned_table() -> str:
    from fixtures.realsize import realsize_config
    from policyload.plan.sharding import engines_table

    with tempfile.TemporaryDirectory() as folder:
        realsize_config("llama-3.1-8b").save_pretrained(folder)
        return engines_table(folder, world_size=8)


def measured_table() -> str:
    """Bytes per rank as the engine held them (rank 0; rank 1 held the same, the recording has both),
    and the plan's figure for the same run after a slash."""
    from transformers import AutoConfig

    from fixtures.checkpoints import ODD_LLAMA, make_config
    from policyload.plan import DPOOptions, plan_dpo_loads
    from policyload.plan.sharding import plan_per_rank
    from policyload.spec import LoadSpec
    from policyload.topology import Topology

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        make_config(ODD_LLAMA[0], **ODD_LLAMA[1]).save_pretrained(folder)
        config = AutoConfig.from_pretrained(folder)
        for stage in (1, 2, 3, "fsdp2"):
            name = "fsdp2" if stage == "fsdp2" else f"zero{stage}"
            ranks = [json.loads((RECORDED / f"{name}-rank{r}.json").read_text()) for r in (0, 1)]
            held = ranks[0]
            if stage == "fsdp2":
                options = DPOOptions(distributed_type="FSDP", world_size=2)
            else:
                options = DPOOptions(distributed_type="DEEPSPEED", deepspeed_zero_stage=stage, world_size=2)
            plan = plan_per_rank(plan_dpo_loads(LoadSpec(folder, dtype="float32"), options, Topology("cuda")), config)
            readings = [_readings(record) for record in ranks]
            cells = [f"{readings[0][key]:,} / {plan.bytes[key]:,}" for key in readings[0]]
            gathered = held["after_step"]["policy"]["materialised_whole_elements"]
            same = "yes" if readings[0] == readings[1] else "no (FSDP2: ceil(rows / 2) on rank 0, the rest on 1)"
            reference = "fsdp2, root only" if stage == "fsdp2" else f"zero{held['reference_engine_stage']}"
            rows.append(
                f"| {'FSDP2' if stage == 'fsdp2' else f'ZeRO-{stage}'} | " + " | ".join(cells)
                + f" | {gathered:,} | {reference} | {same} |"
            )
    header = [
        "| engine | policy | reference | gradients | optimizer state | policy elements gathered after the step"
        " | reference engine | rank 1 = rank 0 |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    return "\n".join(header + rows) + "\n"


def _readings(held: dict) -> dict:
    """Bytes per component off the engine's partitions (sharded_run.py's record of one rank)."""
    optimizer = held["after_step"]["optimizer_state"]
    states = optimizer.get("state", optimizer)  # ZeRO: master + state; FSDP2: AdamW's state on the shards
    return {
        "policy": held["after_step"]["policy"]["bytes"],
        "reference": held["after_load"]["reference"]["bytes"],
        "gradients": held["gradients"]["partition_bytes"],
        "optimizer_state": optimizer.get("master_bytes", 0) + sum(s["bytes"] for s in states.values()),
    }


def main() -> int:
    sys.path[:0] = [str(ROOT), str(ROOT / "src")]
    print(planned_table())
    print(measured_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
