"""Per rank under DeepSpeed ZeRO-1/2/3 and FSDP2: TRL 1.16's own DPOTrainer, one step on 2 CPU ranks (torchrun,
gloo), what each engine holds read off its own partitions (`sharded_run.py`), held to the per-rank
plan (`policyload.plan.sharding`): parameter counts exactly, bytes within 1%, after loading and at
the step; and the distributed load itself: how TRL prepares the reference, what `from_pretrained`
receives, which ranks read the checkpoint.

The checkpoint is `odd-llama` (fixtures/checkpoints.py): odd element counts, so DeepSpeed's partition
padding shows on 2 ranks. Each check runs twice: on the live run (`tox -e dist-cpu`, where DeepSpeed is
installed; skipped elsewhere with that reason) and on the committed recording of such a run
(`conformance/recorded/sharded-2rank/`: the rank files `sharded_run.py` wrote on 2 CPU ranks, one
torchrun per engine as in its docstring, copied there), so that every environment, and
`tox -e mutation`, holds the plan to what the engines held. FSDP2 runs through TRL with accelerate's
CPU check bypassed (`upstream_patches.fsdp2_on_cpu`; docs/distributed.md).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from policyload.spec import LoadSpec
from policyload.topology import Topology

from .test_distributed import free_port
from .upstream_patches import deepspeed_branch_backend

TIMEOUT_S = 400
RANKS = (0, 1)
STAGES = (1, 2, 3)
SCRIPT = Path(__file__).with_name("sharded_run.py")
RECORDED = Path(__file__).parent / "recorded" / "sharded-2rank"


@pytest.fixture(scope="module")
def odd_llama():
    from fixtures.checkpoints import tiny_checkpoint

    return tiny_checkpoint("odd-llama")


ENGINES = (*[f"zero{s}" for s in STAGES], "fsdp2")


def read_records(folder: Path) -> dict:
    """Records by ZeRO stage (1-3) or "fsdp2", then rank."""
    def engine(name):
        return {r: json.loads((folder / f"{name}-rank{r}.json").read_text()) for r in RANKS}

    return {**{s: engine(f"zero{s}") for s in STAGES}, "fsdp2": engine("fsdp2")}


@pytest.fixture(scope="module", params=["recorded", "live"])
def runs(request, odd_llama, tmp_path_factory) -> dict[int, dict[int, dict]]:
    """Records by stage, then rank: the committed recording, or one torchrun of `sharded_run.py` per
    ZeRO stage now."""
    if request.param == "recorded":
        return read_records(RECORDED)
    pytest.importorskip("deepspeed", reason="requires DeepSpeed: run tox -e dist-cpu (installed there, --no-deps)")
    out_dir = tmp_path_factory.mktemp("sharded")
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() < len(RANKS):
        pytest.skip(f"requires no GPU (CPU ranks, gloo) or {len(RANKS)}+ GPUs: one per rank (NCCL)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if not torch.cuda.is_available():
        env["DS_ACCELERATOR"] = "cpu"  # DeepSpeed's CPU accelerator, over gloo
    for engine in ENGINES:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(len(RANKS)),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
            str(SCRIPT), str(out_dir), "--engine", engine, "--checkpoint", str(odd_llama),
        ]  # fmt: skip
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        if run.returncode != 0:
            output = f"{run.stdout[-2000:]}\n{run.stderr[-6000:]}"
            pytest.fail(f"torchrun {engine} exited with {run.returncode}:\n{output}")
    return read_records(out_dir)


def rank_plan(checkpoint, stage, world_size: int = 2, **offload):
    """The per-rank plan for a ZeRO stage (`offload`: DPOOptions' offload_optimizer / offload_param), or
    for FSDP2 (`stage="fsdp2"`)."""
    from transformers import AutoConfig

    from policyload.plan import DPOOptions, plan_dpo_loads
    from policyload.plan.sharding import plan_per_rank

    if stage == "fsdp2":
        options = DPOOptions(distributed_type="FSDP", world_size=world_size)
    else:
        options = DPOOptions(
            distributed_type="DEEPSPEED", deepspeed_zero_stage=stage, world_size=world_size, **offload
        )
    plan = plan_dpo_loads(LoadSpec(str(checkpoint), dtype="float32"), options, Topology("cuda"))
    return plan_per_rank(plan, AutoConfig.from_pretrained(checkpoint))


cases = pytest.mark.parametrize("stage, rank", [(s, r) for s in STAGES for r in RANKS], ids=lambda v: str(v))


def test_odd_llama_has_odd_parameters(odd_llama):
    """The fixture does what it is for: element counts by hand (hidden 9, head_dim 10, MLP 15, vocab 51,
    2 layers): embed and lm_head 51*9 = 459, q/k/v 10*9 = 90 and o 9*10 = 90, gate/up/down 15*9 = 135,
    norms 9; total 2*459 + 2*(4*90 + 3*135 + 2*9) + 9 = 2493."""
    from transformers import AutoConfig

    from policyload.memory_model import meta_model

    numels = [p.numel() for p in meta_model(AutoConfig.from_pretrained(odd_llama)).parameters()]
    assert sum(numels) == 2 * 459 + 2 * (4 * 90 + 3 * 135 + 2 * 9) + 9 == 2493
    assert any(n % 2 for n in numels)


@cases
def test_engine_is_the_planned_one_on_every_rank(runs, stage, rank):
    record = runs[stage][rank]
    assert (record["distributed_type"], record["world_size"], record["policy_engine_stage"]) == (
        "DEEPSPEED", 2, stage,
    )  # fmt: skip


@cases
@pytest.mark.parametrize("moment", ["after_load", "after_step"])
@pytest.mark.parametrize("model", ["policy", "reference"])
def test_parameters_held_per_rank_equal_the_plan(runs, odd_llama, stage, rank, moment, model):
    """Elements exactly, bytes within 1% (here exact: float32, no allocator in the reading)."""
    held = runs[stage][rank][moment][model]
    planned = rank_plan(odd_llama, stage)
    assert held["elements"] == planned.elements[model]
    assert held["bytes"] == pytest.approx(planned.bytes[model], rel=0.01)


@cases
def test_gradients_at_the_step_equal_the_plan(runs, odd_llama, stage, rank):
    held = runs[stage][rank]["gradients"]
    planned = rank_plan(odd_llama, stage)
    assert (held["partition_elements"], held["param_grad_elements"]) == (planned.elements["gradients"], 0)
    assert held["partition_bytes"] == pytest.approx(planned.bytes["gradients"], rel=0.01)


@cases
def test_optimizer_state_after_the_step_equals_the_plan(runs, odd_llama, stage, rank):
    held = runs[stage][rank]["after_step"]["optimizer_state"]
    planned = rank_plan(odd_llama, stage)
    elements = [held["master_elements"], held["state"]["exp_avg"]["elements"], held["state"]["exp_avg_sq"]["elements"]]
    assert elements == [planned.elements["optimizer_state"]] * 3
    total = held["master_bytes"] + sum(state["bytes"] for state in held["state"].values())
    assert total == pytest.approx(planned.bytes["optimizer_state"], rel=0.01)


def test_partition_padding_by_hand(odd_llama):
    """The padding the runs confirm, written out. ZeRO-1/2: the Trainer's groups are 2448 decayed and
    45 not (5 norms of 9); each padded to a multiple of 2 x 2 = 4: 2448 and 48, halves 1224 + 24 = 1248.
    ZeRO-3: ceil(numel / 2) per parameter: 2 x 230 (embed, lm_head) + 2 x (4 x 45 + 3 x 68 + 2 x 5) + 5
    = 460 + 788 + 5 = 1253 (2493 / 2 unpadded would be 1246.5)."""
    assert rank_plan(odd_llama, 1).elements["optimizer_state"] == 1224 + 24
    assert rank_plan(odd_llama, 2).elements["gradients"] == 1248
    assert rank_plan(odd_llama, 3).elements["policy"] == 2 * 230 + 2 * (4 * 45 + 3 * 68 + 2 * 5) + 5 == 1253


@cases
def test_trl_prepares_the_reference_as_planned(runs, odd_llama, stage, rank):
    """TRL 1.16 `prepare_deepspeed` (models/utils.py:285-286): stage 0 for the reference under ZeRO-1/2."""
    planned = rank_plan(odd_llama, stage).reference_engine
    assert f"zero{runs[stage][rank]['reference_engine_stage']}" == planned


@cases
def test_zero3_policy_stays_gathered_after_the_step(runs, odd_llama, stage, rank):
    """Under ZeRO-3, below stage3_max_live_parameters the policy's gathered parameters are not released
    (planned as `policy_gathered_after_step`); no other stage gathers; the reference was released."""
    planned = rank_plan(odd_llama, stage).elements.get("policy_gathered_after_step", 0)
    after = runs[stage][rank]["after_step"]
    assert (after["policy"]["materialised_whole_elements"], after["reference"]["materialised_whole_elements"]) == (
        planned, 0,
    )  # fmt: skip


@cases
def test_from_pretrained_receives_device_map_none_under_deepspeed(runs, stage, rank):
    """Both loads (policy, reference) get `device_map=None` (dpo_trainer.py:570, :920), and under
    ZeRO-3 run inside zero.Init (is_deepspeed_zero3_enabled)."""
    calls = runs[stage][rank]["from_pretrained"]
    assert [(call["device_map"], call["zero3_init"]) for call in calls] == [("None", stage == 3)] * 2


@cases
def test_checkpoint_readers_are_the_planned_ones(runs, odd_llama, stage, rank):
    """ZeRO-3: rank 0 reads the tensors, the others the header (map_location "meta"), once per load;
    otherwise every rank maps the whole file (safe_open) for each load."""
    reads = [(read["via"], read["map_location"]) for read in runs[stage][rank]["checkpoint_reads"]]
    readers = rank_plan(odd_llama, stage).checkpoint_readers
    if readers == "rank 0":
        expected = [("load_state_dict", "cpu" if rank == 0 else "meta")] * 2
    else:
        assert readers == "every rank"
        expected = [("safe_open", "cpu")] * 2
    assert reads == expected


# --- FSDP2 through TRL (accelerate's device check bypassed: upstream_patches.fsdp2_on_cpu) -------


def test_fsdp2_odd_llama_shards_by_hand():
    """FSDP2 splits dim 0: rank 0 holds ceil(dim0 / 2) rows. embed and lm_head [51, 9]: 26 x 9 = 234;
    q, k, v [10, 9]: 5 x 9 = 45; o [9, 10]: 5 x 10 = 50; gate, up [15, 9]: 8 x 9 = 72; down [9, 15]:
    5 x 15 = 75; norms [9]: 5. Rank 0: 2 x 234 + 2 x (3 x 45 + 50 + 2 x 72 + 75 + 2 x 5) + 5 = 1301."""
    assert 2 * 234 + 2 * (3 * 45 + 50 + 2 * 72 + 75 + 2 * 5) + 5 == 1301


@pytest.mark.parametrize("rank", RANKS)
def test_fsdp2_runs_as_fsdp_with_the_bypass_only(runs, rank):
    """accelerate on a CPU rank makes MULTI_CPU of an FSDP plugin (the upstream cause: fails once it
    attaches FSDP to CPU processes, then drop `fsdp2_on_cpu`); with the bypass the Trainer ran FSDP."""
    record = runs["fsdp2"][rank]
    assert (record["accelerate_without_bypass"], record["distributed_type"]) == ("MULTI_CPU", "FSDP")


@pytest.mark.parametrize("rank", RANKS)
def test_fsdp2_reference_wrapped_at_the_root_only(runs, odd_llama, rank):
    """TRL 1.16 `prepare_fsdp` (models/utils.py:337): `fully_shard(model)`, no inner unit; accelerate's
    policy wrap has one per decoder layer."""
    record = runs["fsdp2"][rank]
    assert rank_plan(odd_llama, "fsdp2").reference_engine == "fsdp2-root"
    assert (record["reference_wrapped_submodules"], record["policy_wrapped_submodules"] >= 2) == (0, True)


def test_fsdp2_per_rank_equals_the_plan(runs, odd_llama):
    """Rank 0 holds the plan's figure (the rank with the most); both ranks together hold every parameter
    once. The policy is whole on every rank after loading (transformers#43749; sharded at `prepare`),
    the reference sharded already (TRL prepares it in `__init__`)."""
    plan = rank_plan(odd_llama, "fsdp2")
    ranks = runs["fsdp2"]
    held = {
        "policy": [r["after_step"]["policy"]["elements"] for r in ranks.values()],
        "reference": [r["after_load"]["reference"]["elements"] for r in ranks.values()],
        "gradients": [r["gradients"]["partition_elements"] for r in ranks.values()],
        "optimizer_state": [r["after_step"]["optimizer_state"]["exp_avg"]["elements"] for r in ranks.values()],
    }
    for component, (rank0, rank1) in held.items():
        assert (component, rank0, rank0 + rank1) == (component, plan.elements[component], 2493)
    assert [r["after_load"]["policy"]["elements"] for r in ranks.values()] == [2493, 2493]
    rank0 = ranks[0]
    assert rank0["after_step"]["policy"]["bytes"] == pytest.approx(plan.bytes["policy"], rel=0.01)
    optimizer = sum(state["bytes"] for state in rank0["after_step"]["optimizer_state"].values())
    assert optimizer == pytest.approx(plan.bytes["optimizer_state"], rel=0.01)


# --- the workaround (upstream_patches.deepspeed_on_cpu), fenced ---------------------------------


def test_deepspeed_branch_still_drops_the_backend(tmp_path):
    """The upstream cause of `deepspeed_on_cpu`: TrainingArguments' DeepSpeed branch passes no backend
    to PartialState. Fails once transformers passes `ddp_backend` there: drop the workaround then."""
    config = {"zero_optimization": {"stage": 2}, "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto"}
    backend = deepspeed_branch_backend(output_dir=str(tmp_path), deepspeed=config, ddp_backend="gloo", report_to="none")
    assert backend is None, f"transformers now passes backend={backend!r} on the DeepSpeed path: drop deepspeed_on_cpu"


def test_the_probe_sees_a_backend_that_is_passed(tmp_path):
    """The probe itself can fail: without `deepspeed`, TrainingArguments passes ddp_backend, and the
    probe reads it (the planted counterpart of the test above)."""
    assert deepspeed_branch_backend(output_dir=str(tmp_path), ddp_backend="gloo", report_to="none") == "gloo"
