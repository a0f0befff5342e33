"""How TRL prepares the reference model under each engine, in every release of the matrix, held to the
per-rank plan (`policyload.plan.sharding.plan_per_rank`).

`test_sharded.py` watches the real engines, but only under TRL 1.16 (`tox -e dist-cpu`). This level runs
the installed release's own `prepare_deepspeed` and `prepare_fsdp` (`trl/models/utils.py`, what
`DPOTrainer.__init__` calls on the reference) in any environment, the engine stubbed at its entry:
`deepspeed.initialize` records the config TRL hands it; `fully_shard` and FSDP1's
`FullyShardedDataParallel` record what TRL wraps. So `tox -m trl-matrix` asks every release, and
`divergences.toml` (level `reference-engine`) lists the releases where TRL does other than the plan.

What is observed, and what the plan says:

- DeepSpeed: the reference's ZeRO stage (the plan: 3 under ZeRO-3, else TRL's stage 0, a whole
  reference per rank), whether its parameters are offloaded (the plan moves them to the host under
  `offload_param`), and whether its config still carries the training-only blocks `optimizer`,
  `scheduler`, `zero_optimization.offload_optimizer` (the plan gives the reference no optimizer
  state: it is run without one).
- FSDP2: the wrapper and how many inner units it makes (the plan: `fully_shard` at the root, none
  inside, so every reference forward gathers the whole model).
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

from .agreement import Outcome, explain
from .cases import REFERENCE_ENGINE_DEEPSPEED_CASES, REFERENCE_ENGINE_FSDP_CASE, REFERENCE_ENGINE_LEVEL
from .divergences import DIVERGENCES_FILE, load_divergences
from .test_sharded import rank_plan

#: The reference's own file: this level compares TRL with policyload's plan, whatever implementation is selected.
REFERENCE_DIVERGENCES = load_divergences(DIVERGENCES_FILE)


def deepspeed_config(stage: int, offload_optimizer=False, offload_param=False, blocks=False) -> dict:
    """A ZeRO config as users write it (the `optimizer` and `scheduler` blocks of DeepSpeed's own examples)."""
    zero = {"stage": stage}
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config = {"zero_optimization": zero, "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1}
    if blocks:
        config["optimizer"] = {"type": "AdamW", "params": {"lr": 1e-6}}
        config["scheduler"] = {"type": "WarmupLR", "params": {"warmup_num_steps": 10}}
    return config


def observed_deepspeed(config: dict) -> dict:
    """The parts of the config TRL hands `deepspeed.initialize` for the reference that the plan speaks of."""
    zero = config["zero_optimization"]
    return {
        "zero_stage": zero["stage"],
        "offload_param": "offload_param" in zero,
        "offload_optimizer": "offload_optimizer" in zero,
        "optimizer": "optimizer" in config,
        "scheduler": "scheduler" in config,
    }


def planned_deepspeed(checkpoint, stage: int, offload_optimizer=False, offload_param=False, blocks=False) -> dict:
    """What the per-rank plan holds of the reference's engine under this config."""
    rank = rank_plan(checkpoint, stage, offload_optimizer=offload_optimizer, offload_param=offload_param)
    return {
        "zero_stage": {"zero3": 3, "zero0": 0}[rank.reference_engine],
        "offload_param": rank.host_bytes["reference"] > 0,
        "offload_optimizer": False,  # no optimizer state is planned for the reference
        "optimizer": False,
        "scheduler": False,
    }


@pytest.fixture(scope="module")
def odd_llama():
    from fixtures.checkpoints import tiny_checkpoint

    return tiny_checkpoint("odd-llama")


@pytest.fixture(scope="module")
def reference_model(odd_llama):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(odd_llama).eval()


def trl_prepare_deepspeed(model, config: dict, monkeypatch) -> dict:
    """TRL's `prepare_deepspeed` on the reference, `deepspeed.initialize` stubbed: the config it received."""
    from trl.models.utils import prepare_deepspeed

    received = []

    def initialize(model, config, **_):
        received.append(config)
        return model, None, None, None

    stub = types.ModuleType("deepspeed")
    stub.__spec__ = importlib.machinery.ModuleSpec("deepspeed", None)
    stub.initialize = initialize
    monkeypatch.setitem(sys.modules, "deepspeed", stub)
    accelerator = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=config)))
    prepare_deepspeed(model, accelerator)
    assert len(received) == 1, f"TRL called deepspeed.initialize {len(received)} times for one reference"
    return received[0]


def assert_as_planned(case_id: str, planned: dict, observed: dict) -> None:
    __tracebackhide__ = True
    message = explain(REFERENCE_ENGINE_LEVEL, case_id, Outcome(planned), Outcome(observed), REFERENCE_DIVERGENCES)
    if message:
        raise AssertionError(message)


def test_dpo_trainer_prepares_the_reference_with_these_functions():
    """Bookkeeping: DPOTrainer hands its reference to `prepare_deepspeed` / `prepare_fsdp` (every release of
    the matrix, e.g. 1.16 dpo_trainer.py), so these are the functions this level runs. Read as text: the
    module's import pulls in the trainer's optional integrations."""
    import trl

    source = (Path(trl.__file__).parent / "trainer" / "dpo_trainer.py").read_text()
    assert "self.ref_model = prepare_deepspeed(self.ref_model, self.accelerator)" in source
    assert "self.ref_model = prepare_fsdp(self.ref_model, self.accelerator)" in source


@pytest.mark.parametrize("case_id", list(REFERENCE_ENGINE_DEEPSPEED_CASES))
def test_deepspeed_reference_config_is_the_planned_one(case_id, odd_llama, reference_model, monkeypatch):
    fields = REFERENCE_ENGINE_DEEPSPEED_CASES[case_id]
    user_config = deepspeed_config(**fields)
    received = trl_prepare_deepspeed(reference_model, user_config, monkeypatch)
    assert user_config == deepspeed_config(**fields), "TRL changed the plugin's own config (it should copy it)"
    assert_as_planned(case_id, planned_deepspeed(odd_llama, **fields), observed_deepspeed(received))


def inner_units(policy, model) -> int:
    """How many submodules below the root an FSDP1 `auto_wrap_policy` wraps (torch calls it so, per module)."""
    if policy is None:
        return 0
    return sum(
        bool(policy(module=module, recurse=False, nonwrapped_numel=sum(p.numel() for p in module.parameters())))
        for name, module in model.named_modules()
        if name
    )


def fsdp_plugin(fsdp_version: int):
    """accelerate's FSDP plugin as TRL's own examples configure it (examples/accelerate_configs/fsdp1.yaml,
    fsdp2.yaml: `fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP`), the policy wrapped per decoder layer."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    return FullyShardedDataParallelPlugin(fsdp_version=fsdp_version, auto_wrap_policy="transformer_based_wrap")


def trl_prepare_fsdp(model, fsdp_version: int, monkeypatch) -> dict:
    """TRL's `prepare_fsdp` on the reference, the wrappers stubbed: which one TRL called, on what."""
    import torch.distributed.fsdp as fsdp
    import torch.distributed.fsdp.fully_sharded_data_parallel as fsdp1
    import trl.models.utils as trl_utils
    calls = []

    class FullyShardedDataParallel:  # FSDP1: a wrapper module
        def __init__(self, module, auto_wrap_policy=None, **_):
            calls.append({"wrapper": "FullyShardedDataParallel", "root": module is model,
                          "inner_units": inner_units(auto_wrap_policy, module)})  # fmt: skip
            self.module = module

        def eval(self):
            return self

    def fully_shard(module, **_):  # FSDP2: in place, on the module it is given
        calls.append({"wrapper": "fully_shard", "root": module is model, "inner_units": 0})
        return module

    monkeypatch.setattr(fsdp1, "FullyShardedDataParallel", FullyShardedDataParallel)
    monkeypatch.setattr(fsdp, "FullyShardedDataParallel", FullyShardedDataParallel)
    monkeypatch.setattr(fsdp, "fully_shard", fully_shard)
    if hasattr(trl_utils, "FSDP"):  # imported at module level from 1.4
        monkeypatch.setattr(trl_utils, "FSDP", FullyShardedDataParallel)
    import torch

    plugin = fsdp_plugin(fsdp_version)
    accelerator = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin), device=torch.device("cpu"))
    trl_utils.prepare_fsdp(model, accelerator)
    assert len(calls) == 1, f"TRL wrapped the reference {len(calls)} times: {calls}"
    return calls[0]


def test_fsdp2_reference_is_wrapped_as_planned(odd_llama, reference_model, monkeypatch):
    """The plan (`reference_engine == "fsdp2-root"`): `fully_shard` on the root, no inner unit."""
    planned = {"fsdp2-root": {"wrapper": "fully_shard", "root": True, "inner_units": 0}}[
        rank_plan(odd_llama, "fsdp2").reference_engine
    ]
    observed = trl_prepare_fsdp(reference_model, fsdp_version=2, monkeypatch=monkeypatch)
    assert_as_planned(REFERENCE_ENGINE_FSDP_CASE, planned, observed)


def test_fsdp1_policy_counts_one_unit_per_decoder_layer(reference_model):
    """The counter itself: accelerate's transformer-based policy for odd-llama (2 LlamaDecoderLayer, its
    `_no_split_modules`) wraps exactly the 2 layers."""
    plugin = fsdp_plugin(1)
    plugin.set_auto_wrap_policy(reference_model)
    assert reference_model.config.num_hidden_layers == 2
    assert inner_units(plugin.auto_wrap_policy, reference_model) == 2
    assert inner_units(None, reference_model) == 0
