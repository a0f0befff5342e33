"""The README's findings, six short tables generated from what the project has recorded, never
typed in: what changed in the policy load at each TRL release (the committed sweep,
`conformance/sweep/`), how other frameworks' loading code compares with TRL's (the committed
compatibility recordings, `conformance/recorded/compatibility/`), and whether the planners'
answers hold (the committed real-size CPU runs, `benchmarks/results/cpu-x86_64-2core/`).

Each table sits in README.md between `<!-- front-door:NAME -->` and `<!-- front-door:end -->`;
`tests/test_docs_tables.py` holds each block equal to its generator.

    python -m conformance.front_door            # rewrite README.md's blocks
    python -m conformance.front_door --check    # exit 1 if any block is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from itertools import pairwise
from pathlib import Path

from policyload import drift
from policyload.report import load_run
from policyload.sweep import RECORD, load_record, runs_of

from .compatibility import RECORDED, read, summary_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results" / "cpu-x86_64-2core"
#: The committed real-size runs the planner table reads: the load benchmark, the DPO bill, the training step.
LOAD_RUN, DPO_RUN = RESULTS / "qwen2-0.5b-cpu.json.gz", RESULTS / "qwen2-0.5b-dpo-cpu.json.gz"
TRAIN_RUN = RESULTS / "qwen2-0.5b-train-cpu.json.gz"
#: How the DPO bill's setups read in a sentence (benchmarks/dpo_cases.py names them).
SETUPS = {
    "reference": "full fine-tune (policy + reference)",
    "precompute": "precomputed reference log-probs (policy alone)",
    "peft": "LoRA / QLoRA (policy + adapter)",
}


def trl_changes() -> str:
    """One row per change at the exact release it first appears in, from the committed sweep:
    the keyword, its one value change (or how many), and the cases it touched."""
    runs, unobserved = runs_of(load_record(RECORD))
    lines = ["| first in TRL | keyword | change | cases |", "|---|---|---|---:|"]
    for old, new in pairwise(runs):
        release = drift.first_release(old, new, unobserved)
        for (_, keyword), changes in drift.changed_cases(old, new).items():
            cases = sum(len(ids) for ids in changes.values())
            change = next(iter(changes)) if len(changes) == 1 else f"{len(changes)} different value changes"
            lines.append(f"| {release} | `{keyword}` | {change} | {cases} |")
    return "\n".join(lines) + "\n"


def frameworks() -> str:
    """The compatibility table, counts only (docs/implementations.md spells each first difference)."""
    return summary_table(read(RECORDED)) + "\n"


def _range(fractions: list[float]) -> str:
    low, high = min(fractions), max(fractions)
    return f"{low:+.1%}" if f"{low:+.1%}" == f"{high:+.1%}" else f"{low:+.1%} to {high:+.1%}"


def planners() -> str:
    """The planners against the machine on the Qwen2-0.5B shape (CPU, real size): the memory model
    per load, and the DPO planner's total per setup, as prediction / measurement - 1."""
    load, dpo = load_run(LOAD_RUN), load_run(DPO_RUN)
    lines = ["| what is predicted | cases | predicted / measured - 1 |", "|---|---:|---:|"]
    measured = [row for row in load.rows if row.memory_measured_bytes and row.memory_predicted_bytes]
    resident = [row.memory_predicted_bytes / row.memory_measured_bytes - 1 for row in measured]
    peak = [row.memory_peak_predicted_bytes / row.memory_peak_measured_bytes - 1 for row in measured]
    lines.append(f"| memory model: a load's resident memory | {len(resident)} | {_range(resident)} |")
    lines.append(f"| memory model: a load's peak | {len(peak)} | {_range(peak)} |")
    for setup, words in SETUPS.items():
        bills = [case["dpo_bill"] for case in dpo.dpo if case.get("dpo_setup") == setup and "dpo_bill" in case]
        off = [bill["planned"]["total_bytes"] / bill["measured"]["total_bytes"] - 1 for bill in bills]
        if off:
            lines.append(f"| DPO planner: what `DPOTrainer` holds, {words} | {len(off)} | {_range(off)} |")
    lines += training_step_rows()
    return "\n".join(lines) + "\n"


def training_step_rows() -> list[str]:
    """The training-step plan and its peers against the first DPO step's peak as the CPU allocator read
    it, the recorded readings re-planned by today's planner (`check_train_step.replan`)."""
    from benchmarks.check_train_step import replan

    train = load_run(TRAIN_RUN)
    replan(train)
    measured = [case for case in train.train if case["train_step"]["peak"]["measured_bytes"]]
    off = [case["train_step"]["peak"]["off"] for case in measured]
    rows = [f"| training-step plan: the first DPO step's peak (allocator) | {len(off)} | {_range(off)} |"]
    for peer in sorted({name for case in measured for name in case["peers"]}):
        offs = [case["peers"][peer]["off"] for case in measured if case["peers"][peer]["off"] is not None]
        if offs:
            rows.append(f"| peer: {peer}, the same step's peak | {len(offs)} | {_range(offs)} |")
    return rows


def trl3168() -> str:
    """trl#3168's configuration (Qwen2-0.5B shape, batch 8, length 1024) planned three ways (`plan.page`)."""
    from fixtures.realsize import realsize_config
    from policyload.plan.page import table

    return table(realsize_config("qwen2-0.5b"))


def per_rank_8b() -> str:
    """Full DPO of the Llama-3.1-8B shape on 8 GPUs, GiB per rank under each engine
    (`plan.sharding.engines_table`, as docs/distributed.md prints it)."""
    from scripts.distributed_tables import planned_table

    return planned_table()


def per_rank_measured() -> str:
    """What DeepSpeed ZeRO-1/2/3 and FSDP2 held per rank on 2 CPU ranks, against the plan
    (the committed recording, `conformance/recorded/sharded-2rank/`, as docs/distributed.md prints it)."""
    from scripts.distributed_tables import measured_table

    return measured_table()


#: Block name -> its generator, in the order of the README.
BLOCKS = {"trl-changes": trl_changes, "frameworks": frameworks, "planners": planners, "trl3168": trl3168,
          "per-rank-8b": per_rank_8b, "per-rank-measured": per_rank_measured}
END = "<!-- front-door:end -->"


def begin(name: str) -> str:
    return f"<!-- front-door:{name} (python -m conformance.front_door) -->"


def with_blocks(text: str) -> str:
    """`text` with each block's body replaced by its generator's output; a block missing is an error."""
    for name, generate in BLOCKS.items():
        pattern = re.compile(re.escape(begin(name)) + r"\n.*?" + re.escape(END), re.DOTALL)
        if not pattern.search(text):
            raise ValueError(f"README.md has no {begin(name)} ... {END} block")
        block = f"{begin(name)}\n{generate()}{END}"
        text = pattern.sub(lambda _, block=block: block, text, count=1)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.front_door", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md's blocks are stale; write nothing")
    args = parser.parse_args(argv)
    text = README.read_text()
    fresh = with_blocks(text)
    if args.check:
        if fresh != text:
            print("README.md's findings are stale: python -m conformance.front_door", file=sys.stderr)
            return 1
        return 0
    README.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
