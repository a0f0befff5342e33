"""Level "dpo-plan": `plan_dpo_loads` against what TRL's DPO recipe really loads, on every release.

TRL's own `trl.scripts.dpo.main` runs for real on a tiny checkpoint (with a tokenizer), stopped
before `trainer.train()`; for a policy given as an instance, `DPOTrainer` is constructed directly
with a loaded model, as a user's script would. Every outermost `from_pretrained` and every
`deepcopy` of a model is recorded (`dpo_recording`), with the adapter PEFT built, and the whole
sequence is compared with the plan: agreement, or exactly a `divergences.toml` entry.

Distributed types are simulated on this CPU where DPOTrainer reads them to decide a load: its
`args.distributed_state.distributed_type` (MULTI_GPU, DEEPSPEED, FSDP), and under FSDP the
trainer's `is_fsdp_enabled` (`trainer_patches`); the process itself stays one plain CPU process.
DeepSpeed itself is not simulated: `is_deepspeed_enabled` decides no load, only how the reference
is wrapped.
"""

from __future__ import annotations

import contextlib

import pytest

from fixtures.preference_data import ROWS
from policyload import LoadSpec, Topology
from policyload.plan.trainer import word_tokenizer

from .agreement import Outcome, assert_agrees, observe
from .cases import DPO_PLAN_LEVEL
from .dpo_cases import CASES, DPOCase
from .dpo_recording import Recorded, every_load, flat, observed, planned
from .implementation import NotApplicable, selected
from .trainer_patches import args_see_distributed_type, recipe_stops_before_training, trainer_sees_fsdp
from .trl_oracle import model_config, reference_spec
from .trl_release import FACTS
from .upstream_patches import trl_device_decider, trl_partial_state


def _tokenizer():
    return word_tokenizer(ROWS)


def _training_args(case: DPOCase, output_dir):
    from trl import DPOConfig

    trust = {"trust_remote_code": False} if FACTS.trust_remote_code_on == "DPOConfig" else {}
    return DPOConfig(
        output_dir=str(output_dir),
        report_to="none",
        bf16=False,
        precompute_ref_log_probs=case.mode == "precompute",
        per_device_train_batch_size=2,
        **trust,
    )


@contextlib.contextmanager
def _machine(case: DPOCase, args):
    """This machine as it is (the plan is asked for its topology), with `case`'s distributed type
    where DPOTrainer reads it (`args.distributed_state.distributed_type`), and FSDP's flag. With a
    `case.topology`, TRL's device decider alone sees it (the weights still load on this CPU: "auto"
    resolves to it)."""
    with contextlib.ExitStack() as stack:
        if case.topology is not None:
            stack.enter_context(trl_partial_state(trl_device_decider(), case.topology))
        if case.distributed_type != "NO":
            stack.enter_context(args_see_distributed_type(args, case.distributed_type))
        if case.distributed_type == "FSDP":
            stack.enter_context(trainer_sees_fsdp())
        yield


def trl_loads(case: DPOCase, path: str, dataset_dir, output_dir) -> dict:
    """What TRL's recipe (or, for an instance, its trainer) loads for `case`, in the shared shape."""
    from trl import DatasetMixtureConfig, DPOTrainer, ScriptArguments, get_peft_config
    from trl.scripts import dpo

    args = _training_args(case, output_dir)
    if case.policy == "path":
        constructed = []
        arguments = (ScriptArguments(dataset_name=str(dataset_dir)), args, model_config(path, **case.fields))
        with _machine(case, args), recipe_stops_before_training(constructed), every_load() as loads:
            dpo.main(*arguments, DatasetMixtureConfig())
        return observed(loads, constructed[0], policy_given=False)
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(path, dtype=case.dtype)
    peft_config = get_peft_config(model_config(path, **case.fields))
    with _machine(case, args), every_load() as loads:
        trainer = DPOTrainer(
            model=policy,
            args=args,
            # From disk, as the recipe loads it: TRL 1.7's precompute reads its cache file back, and an
            # in-memory data set (Dataset.from_list) never writes one (FileNotFoundError).
            train_dataset=load_dataset(str(dataset_dir))["train"],
            processing_class=_tokenizer(),
            peft_config=peft_config,
        )
    return observed(loads, trainer, policy_given=True)


def plan_loads(case: DPOCase, path: str) -> dict:
    """The implementation under test's plan (the reference's `plan_dpo_loads` by default) for `case`
    in the shared shape; an instance's values read off a model loaded alike. A framework without a
    plan function runs its own DPO load path instead (`Implementation.dpo_loads`)."""
    implementation = selected()
    plan_dpo_loads = implementation.function(DPO_PLAN_LEVEL)
    if implementation.dpo_plan is None:  # a framework's own DPO load path, run and recorded
        return plan_dpo_loads(case, path)
    if case.policy == "path":
        topology = case.topology or Topology.detect()
        return planned(plan_dpo_loads(reference_spec(path, case.fields), case.options, topology), path)
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(path, dtype=case.dtype)
    return planned(plan_dpo_loads(LoadSpec(path, dtype=case.dtype), case.options, Topology.detect()), path, policy)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_dpo_loads_match_plan(case, dpo_checkpoint, preference_data, tmp_path, record_observation):
    path = str(dpo_checkpoint)
    ours = observe(plan_loads, case, path)  # first: a case the implementation cannot express skips before TRL runs
    if ours.error == NotApplicable.__name__:
        pytest.skip(f"not expressible in {selected().name}: {ours.message}")
    trl = observe(trl_loads, case, path, preference_data, tmp_path)
    record_observation(str(case), Outcome(value=flat(trl.value)) if trl.error is None else trl)
    assert_agrees(DPO_PLAN_LEVEL, str(case), ours, trl)


def test_recorder_sees_every_outermost_load(dpo_checkpoint):
    """The recorder is neither blind nor double-counting: two loads are two records (the second with
    its own keywords), the model-class call inside the auto class's is not one, a deepcopy of a model
    is a copy, a deepcopy of a dict is nothing."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    with every_load() as loads:
        model = AutoModelForCausalLM.from_pretrained(str(dpo_checkpoint), dtype=torch.float32)
        AutoModelForCausalLM.from_pretrained(str(dpo_checkpoint), dtype=torch.bfloat16)
        copy.deepcopy(model)
        copy.deepcopy({"a": 1})
    assert loads == [
        Recorded("disk", {"dtype": torch.float32}),
        Recorded("disk", {"dtype": torch.bfloat16}),
        Recorded("copy", None),
    ]


def test_case_ids_spell_the_case():
    assert [str(case) for case in CASES[:2]] == ["dpo-fp32-full-NO-path", "dpo-fp32-precompute-NO-path"]
    assert len({str(case) for case in CASES}) == len(CASES)
