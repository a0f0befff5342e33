"""ms-swift 4.6.0: its own DPO load path for `rlhf_type='dpo'` (tox -e impl-ms-swift).

The arguments are ms-swift's `RLHFArguments` dataclass, checked and filled by its own
`__post_init__` (arguments/rlhf_args.py: a full fine-tune sets `ref_model = model`). The loads are
`SwiftRLHF._prepare_model_tokenizer` (pipelines/train/rlhf.py), as `SwiftSft.__init__` calls it:
the reference first (`_prepare_single_model("ref", ...)`, a second `get_model_processor`), then the
policy (`SwiftSft._prepare_model_tokenizer` -> `args.get_model_processor()`, model/register.py),
with `from_pretrained` intercepted. The template and dataset steps of `__init__` and `run` (which
build no model) are not run.

Installed --no-deps (it pins trl<1.0 and transformers<5.20), plus what its model, argument and
rlhf modules import (tox.ini), and `use_cpu=True` (this machine: transformers' TrainingArguments
refuses bf16 on a CPU otherwise). Against TRL 1.16 its arguments module imports
`trl.experimental.ppo`, which TRL no longer has; a stand-in module is registered for that import
only (`_stand_in_for_removed_trl_ppo`: the DPO path does not use it). The tiny checkpoints carry
no tokenizer files: ms-swift's loader reads `AutoTokenizer.from_pretrained(model_dir)`, answered
with the suite's word tokenizer for that path (`_word_tokenizer_for`).

How a case maps: the dtype is `torch_dtype` (a case without one leaves ms-swift's default);
4-bit is `quant_method='bnb', quant_bits=4` with the 4-bit options as its `bnb_4bit_*` fields,
8-bit `quant_bits=8`; `use_peft` is `tuner_type='lora'` with TRL's `ModelConfig` LoRA
values (`lora_rank`, `lora_alpha`, `lora_dropout`; the targets stay ms-swift's default,
all-linear); `attn_implementation` is `attn_impl`,
`model_revision` is `model_revision`. `model_type` and `template` are named (`_TEMPLATES`): for a
local Llama folder four registered model types and many templates match, and ms-swift refuses to
guess (GPT-2 has no registered model type). Not expressible: dtype "auto", both quantizations at
once, `trust_remote_code=False` (ms-swift passes True: model/register.py
`default_trust_remote_code`), a policy instance. Not simulated here: other machines and
distributed types.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..implementation import Implementation, NotApplicable

_DTYPES = ("bfloat16", "float16", "float32")
#: The tiny checkpoints' model types -> ms-swift's registered model type of that name and its plain
#: template (a local folder matches several of each; ms-swift refuses to guess). GPT-2 has none.
_TEMPLATES = {"llama": "llama", "qwen2": "qwen"}


def _stand_in_for_removed_trl_ppo() -> None:
    """Register `trl.experimental.ppo` (absent from TRL 1.16: PPO left TRL) with a `PPOConfig`
    that is transformers' `TrainingArguments`, unless TRL has it. ms-swift 4.6.0's
    `rlhf_trainers/arguments.py:16` imports `PPOConfig` from there at import time (for TRL > 0.28),
    and `RLHFArguments.__post_init__` -> `TrainerFactory.get_training_args` imports that module
    whatever the `rlhf_type`; the DPO path builds `DPOConfig` (TRL's own) and never uses PPO's."""
    import importlib.util
    import sys
    import types

    if "trl.experimental.ppo" in sys.modules or importlib.util.find_spec("trl.experimental.ppo") is not None:
        return
    from transformers import TrainingArguments

    stand_in = types.ModuleType("trl.experimental.ppo")
    stand_in.PPOConfig = type("PPOConfig", (TrainingArguments,), {"__module__": "trl.experimental.ppo"})
    sys.modules["trl.experimental.ppo"] = stand_in


def swift_arguments(path: str, fields: dict, output_dir: str):
    """The smallest ms-swift `RLHFArguments(rlhf_type='dpo')` that says `fields`, checked and
    filled by its own `__post_init__`."""
    _stand_in_for_removed_trl_ppo()
    from swift.arguments import RLHFArguments
    from transformers import AutoConfig

    from fixtures.preference_data import preference_dataset

    fields = dict(fields)
    model_type = AutoConfig.from_pretrained(path).model_type
    if model_type not in _TEMPLATES:
        raise NotApplicable(f"no ms-swift model_type and template for {model_type!r}; accepted: {sorted(_TEMPLATES)}")
    raw = {
        "model": path,
        "model_type": model_type,
        "template": _TEMPLATES[model_type],
        "rlhf_type": "dpo",
        "tuner_type": "full",
        "output_dir": output_dir,
        "dataset": [str(preference_dataset())],
        "use_hf": True,
        "use_cpu": True,  # this machine; transformers' TrainingArguments refuses bf16 on a CPU otherwise
    }
    if "dtype" in fields:
        dtype = fields.pop("dtype")
        if dtype not in _DTYPES:
            raise NotApplicable(f"torch_dtype={dtype!r} cannot be asked for; accepted: {list(_DTYPES)}")
        raw["torch_dtype"] = dtype
    four, eight = fields.pop("load_in_4bit", False), fields.pop("load_in_8bit", False)
    if four and eight:
        raise NotApplicable("4-bit and 8-bit at once cannot be asked for (one quant_bits)")
    if four or eight:
        raw.update(quant_method="bnb", quant_bits=4 if four else 8)
    for trl_name, swift_name in (
        ("bnb_4bit_quant_type", "bnb_4bit_quant_type"),
        ("use_bnb_nested_quant", "bnb_4bit_use_double_quant"),
        ("bnb_4bit_quant_storage", "bnb_4bit_quant_storage"),
    ):
        if trl_name in fields:
            raw[swift_name] = fields.pop(trl_name)
    if fields.pop("use_peft", False):
        from ..trl_oracle import model_config

        trl = model_config(path)
        raw.update(tuner_type="lora", lora_rank=trl.lora_r, lora_alpha=trl.lora_alpha, lora_dropout=trl.lora_dropout)
    if "model_revision" in fields:
        raw["model_revision"] = fields.pop("model_revision")
    if "attn_implementation" in fields:
        raw["attn_impl"] = fields.pop("attn_implementation")
    if "trust_remote_code" in fields:
        if not fields.pop("trust_remote_code"):
            raise NotApplicable("trust_remote_code=False cannot be asked for: ms-swift always passes True")
    if fields:
        raise NotApplicable(f"no ms-swift field for {sorted(fields)}")
    return RLHFArguments(**raw)


@contextlib.contextmanager
def _word_tokenizer_for(path: str):
    """`AutoTokenizer.from_pretrained(path)` answers the suite's word tokenizer (the tiny
    checkpoints have no tokenizer files); any other path is loaded as usual."""
    from unittest import mock

    from transformers import AutoTokenizer

    from fixtures.preference_data import ROWS
    from policyload.plan.trainer import word_tokenizer

    original = AutoTokenizer.from_pretrained

    def answer(name, *args, **kwargs):
        if str(name) == str(path):
            return word_tokenizer(ROWS)
        return original(name, *args, **kwargs)

    with mock.patch.object(AutoTokenizer, "from_pretrained", answer):
        yield


def _this_cpu_only(topology=None, distributed_type: str = "NO") -> None:
    if (topology is not None and topology.accelerator is not None) or distributed_type != "NO":
        raise NotApplicable("other machines and distributed types are not simulated for ms-swift here")


def model_kwargs(path: str, fields: dict, topology) -> dict:
    """What `args.get_model_processor()` (the policy's load, SwiftSft._prepare_model_tokenizer)
    passes to `from_pretrained`."""
    import tempfile

    from ..framework_loads import first_load

    _this_cpu_only(topology)
    with tempfile.TemporaryDirectory() as output_dir:
        args = swift_arguments(path, fields, output_dir)
        with _word_tokenizer_for(path):
            return first_load(args.get_model_processor, path)


def dpo_loads(case, path: str) -> dict:
    """`SwiftRLHF._prepare_model_tokenizer`, then `SwiftRLHF.prepare_model` (the tuner: the LoRA
    adapter, pipelines/train/tuner.py:372 TunerMixin.prepare_model -> prepare_adapter), as
    `SwiftSft.run` calls it (pipelines/train/sft.py:174; `template` and `train_dataset` are read by
    LoRA-GA only), recorded. The reference is `RLHFArguments.__post_init__`'s decision
    (arguments/rlhf_args.py:294-299: `ref_model = model` for a full fine-tune, none for LoRA). Its
    DPOTrainer is not built: it deletes TRL's `__init__` (rlhf_trainers/dpo_trainer.py:28) and its
    own (rlhf_mixin.py `RLHFTrainerMixin.__init__`) loads nothing and changes no parameter, only
    wraps a reference it is given. ms-swift loads the reference first; the recording is put policy
    first, as the shared shape reads it."""
    import tempfile

    from swift.pipelines.train.rlhf import SwiftRLHF

    from ..framework_loads import every_framework_load, loads_shape

    if case.policy != "path":
        raise NotApplicable("SwiftRLHF loads the policy from args.model; no model instance is taken")
    if case.mode in ("precompute", "4bit-nopeft"):
        raise NotApplicable(f"{case.mode}: not a field of ms-swift's DPO arguments")
    _this_cpu_only(case.topology, case.distributed_type)
    with tempfile.TemporaryDirectory() as output_dir:
        args = swift_arguments(path, case.fields, output_dir)
        pipeline = object.__new__(SwiftRLHF)  # SwiftSft.__init__ without its template step
        pipeline.args, pipeline.train_msg = args, {}
        with _word_tokenizer_for(path), every_framework_load() as loads:
            pipeline._prepare_model_tokenizer()
            policy = pipeline.prepare_model(args, pipeline.model)
        policy_first = loads[1:] + loads[:1] if pipeline.ref_model is not None else loads
        return loads_shape(policy_first, policy, pipeline.ref_model, path)


IMPLEMENTATION = Implementation(
    name="ms-swift",
    divergences=Path(__file__).with_name("ms-swift.toml"),
    model_kwargs=model_kwargs,
    dpo_loads=dpo_loads,
    missing={
        "quantization": "QuantizeArguments.get_quantization_config reads the whole arguments; see the recipe level",
        "device-map": "model/utils.py get_default_device_map reads the machine, not a config; see the recipe level",
    },
    description=(
        "ms-swift 4.6.0: RLHFArguments(rlhf_type='dpo'), SwiftRLHF's reference and policy loads, its prepare_model"
    ),
    requires=("ms-swift", "impl-ms-swift"),
)
