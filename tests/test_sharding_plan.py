"""The per-rank plan (`policyload.plan.sharding`) and its command line, by hand on the Llama-3.1-8B shape.

The expected counts are written out from the published shape (hidden 4096, 32 layers, MLP 14336,
8 KV heads of 128, vocabulary 128256, untied head), not taken from the code under test. The 2-rank
engine readings are held to the same plan in conformance/test_sharded.py; docs/distributed.md's
tables are held equal to their generator here.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest

from fixtures.realsize import realsize_config
from policyload import LoadSpec, Topology
from policyload.plan import DPOOptions, main, plan_dpo_loads
from policyload.plan.sharding import plan_per_rank

ROOT = Path(__file__).resolve().parents[1]
H, LAYERS, MLP, KV, VOCAB = 4096, 32, 14336, 8 * 128, 128256
PER_LAYER = 2 * H * H + 2 * H * KV + 3 * H * MLP + 2 * H  # q, o; k, v; gate, up, down; two norms
TOTAL = 2 * VOCAB * H + LAYERS * PER_LAYER + H  # embed, lm_head, layers, final norm
NORMS = (2 * LAYERS + 1) * H  # the Trainer's group without weight decay


@pytest.fixture(scope="module")
def llama8b(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("llama8b")
    realsize_config("llama-3.1-8b").save_pretrained(folder)
    return folder


def rank_plan(folder, **fields):
    from transformers import AutoConfig

    options = DPOOptions(**fields)
    plan = plan_dpo_loads(LoadSpec(str(folder), dtype="bfloat16"), options, Topology("cuda"))
    return plan_per_rank(plan, AutoConfig.from_pretrained(folder))


def test_total_by_hand():
    assert TOTAL == 8_030_261_248  # Llama-3.1-8B's published parameter count


def test_zero3_on_8_ranks_by_hand(llama8b):
    # every tensor of this shape divides by 8: no padding, exactly TOTAL / 8 per rank
    assert TOTAL % 8 == 0
    plan = rank_plan(llama8b, distributed_type="DEEPSPEED", deepspeed_zero_stage=3, world_size=8)
    assert plan.elements == {
        "policy": TOTAL // 8, "reference": TOTAL // 8, "gradients": TOTAL // 8,
        "optimizer_state": TOTAL // 8, "policy_gathered_after_step": 10**9,
    }  # fmt: skip
    assert plan.bytes["policy"] == 2 * TOTAL // 8
    assert plan.bytes["optimizer_state"] == 12 * TOTAL // 8  # fp32 master, exp_avg, exp_avg_sq
    # loading: both partitions plus the largest module gathered whole (the embedding, vocab x hidden)
    assert plan.loading_peak_bytes == 2 * (2 * TOTAL // 8) + 2 * VOCAB * H
    assert (plan.checkpoint_readers, plan.reference_engine) == ("rank 0", "zero3")


@pytest.mark.parametrize("stage", [1, 2])
def test_zero12_keep_the_reference_whole(llama8b, stage):
    plan = rank_plan(llama8b, distributed_type="DEEPSPEED", deepspeed_zero_stage=stage, world_size=8)
    decay = TOTAL - NORMS
    partition = math.ceil(decay / 16) * 16 // 8 + math.ceil(NORMS / 16) * 16 // 8
    assert plan.elements == {"policy": TOTAL, "reference": TOTAL, "gradients": partition, "optimizer_state": partition}
    assert (plan.checkpoint_readers, plan.reference_engine) == ("every rank", "zero0")


def test_zero3_padding_on_a_world_that_does_not_divide(llama8b):
    """World 3: each tensor padded to a multiple of 3 before the split."""
    shapes = [VOCAB * H] * 2 + [H] + LAYERS * ([H * H] * 2 + [H * KV] * 2 + [H * MLP] * 3 + [H] * 2)
    plan = rank_plan(llama8b, distributed_type="DEEPSPEED", deepspeed_zero_stage=3, world_size=3)
    assert plan.elements["policy"] == sum(-(-n // 3) for n in shapes) > TOTAL / 3


def test_fsdp2_shards_both_and_gathers_the_whole_reference(llama8b):
    plan = rank_plan(llama8b, distributed_type="FSDP", world_size=8)
    assert plan.elements["policy"] == plan.elements["reference"] == TOTAL // 8
    assert plan.gather_bytes["reference"] == 2 * TOTAL  # root-only wrap: one gather of all of it
    assert plan.reference_engine == "fsdp2-root"
    assert plan.loading_peak_bytes >= 2 * 2 * TOTAL  # every rank loads both whole (transformers#43749)


def test_offload_moves_the_optimizer_state_to_the_host(llama8b):
    fields = dict(distributed_type="DEEPSPEED", deepspeed_zero_stage=3, world_size=8, offload_optimizer=True)
    plan = rank_plan(llama8b, **fields)
    assert (plan.bytes["optimizer_state"], plan.host_bytes["optimizer_state"]) == (0, 12 * TOTAL // 8)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"world_size": 0}, r"DPOOptions\.world_size=0 is not accepted; accepted: an integer >= 1"),
        ({"world_size": 8}, r"DPOOptions\.world_size=8 is not accepted with distributed_type='NO'"),
        (
            {"distributed_type": "DEEPSPEED", "deepspeed_zero_stage": 2, "offload_param": True},
            r"offload_param=True is not accepted with deepspeed_zero_stage=2; accepted: deepspeed_zero_stage 3",
        ),
        (
            {"distributed_type": "FSDP", "offload_optimizer": True},
            r"offload_optimizer=True is not accepted with deepspeed_zero_stage=None",
        ),
    ],
)
def test_bad_sharding_options_name_field_value_and_accepted(fields, message):
    with pytest.raises(ValueError, match=message):
        DPOOptions(**fields)


def test_cli_answers_per_rank_for_zero3_on_8(llama8b, capsys):
    assert main([str(llama8b), "--dtype", "bfloat16", "--world-size", "8", "--zero-stage", "3", "--json"]) == 0
    per_rank = json.loads(capsys.readouterr().out)["per_rank"]
    assert (per_rank["engine"], per_rank["world_size"]) == ("zero3", 8)
    assert per_rank["components"]["policy"] == 2 * TOTAL // 8
    assert per_rank["step_peak_bytes"] == max(per_rank["phases"].values()) > per_rank["loading_peak_bytes"]


def test_cli_table_per_rank(llama8b, capsys):
    assert main([str(llama8b), "--dtype", "bfloat16", "--world-size", "8", "--zero-stage", "3"]) == 0
    out = capsys.readouterr().out
    assert "per rank, zero3 on 8 ranks" in out and "step peak" in out and "checkpoint read by rank 0" in out


def test_cli_bad_world_size_exits_2(llama8b, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(llama8b), "--world-size", "0", "--zero-stage", "3"])
    assert exit_info.value.code == 2
    assert "DPOOptions.world_size=0 is not accepted" in capsys.readouterr().err


def _block(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:begin -->\n(.*?)<!-- {name}:end -->", text, re.S)
    assert match, f"docs/distributed.md has no {name} block"
    return match.group(1)


def test_docs_tables_equal_their_generator():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import distributed_tables
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    doc = (ROOT / "docs" / "distributed.md").read_text()
    assert _block(doc, "per-rank-8b") == distributed_tables.planned_table()
    assert _block(doc, "per-rank-measured") == distributed_tables.measured_table()


def test_cli_fits_is_judged_per_rank_when_sharded(llama8b, capsys):
    """8B full DPO: whole it needs far more than 40 GiB, per rank under ZeRO-3 on 8 much less; the
    verdict and margin are the rank's."""
    argv = [str(llama8b), "--dtype", "bfloat16", "--batch-size", "1", "--device-memory", "40GiB", "--json"]
    assert main([*argv, "--world-size", "8", "--zero-stage", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    per_rank = result["per_rank"]
    assert result["step_peak_bytes"] > 40 * 2**30  # one process holding it all would not fit
    assert result["fits"] is True
    assert result["margin_bytes"] == 40 * 2**30 - max(per_rank["loading_peak_bytes"], per_rank["step_peak_bytes"])
