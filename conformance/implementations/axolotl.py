"""axolotl 0.19.0: its own DPO load path for an `rl: dpo` config (tox -e impl-axolotl).

The config is axolotl's YAML as a dict, checked and filled by its own `utils/config`
`validate_config` and `normalize_config`; then `train.py setup_model_and_tokenizer` (the policy,
through `loaders/model.py ModelLoader`; with an adapter, only its LoraConfig),
`setup_reference_model` (the reference: a second `ModelLoader(..., reference_model=True)` unless a
LoRA adapter lets TRL unwrap it) and, at the DPO-plan level, `utils/trainer.py setup_trainer` (its
trainer builder, whose DPOTrainer, TRL's, builds the adapter), as `train.py
setup_model_and_trainer` calls them, with `from_pretrained` intercepted.

Installed --no-deps (it pins transformers 5.16.1 and trl 1.9.0, and pulls GPU kernels), plus
what its loader, config schema and trainer builder import (tox.ini); what the builder imports and
this environment lacks, none of it on the DPO path, is stood in for while it imports
(`trainer_builders`). `AXOLOTL_DO_NOT_TRACK=1`: its telemetry
(posthog) is off. `capabilities={"bf16": True}`: the GPU capabilities its CLI passes to
`validate_config` (this CPU has none; without it `bf16: true` is refused).

How a case maps: the dtype is `bf16: true` / `fp16: true` / `bf16: false` (float32), and a
case without a dtype leaves axolotl's default (`bf16: auto`); 4-bit is
`load_in_4bit` + `adapter: qlora`, 8-bit `load_in_8bit` + `adapter: lora`, the 4-bit options in
`bnb_config_kwargs`; `use_peft` is `adapter: lora` with TRL's `ModelConfig` LoRA values and
PEFT's default targets for the architecture. Not expressible: dtype None / "auto", both
quantizations at once, a policy instance. Not simulated here (skipped with that reason): other
machines than this CPU and distributed types, which axolotl reads from torch and accelerate.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..implementation import Implementation, NotApplicable

#: dtype -> axolotl's precision flags. float32 is `bf16: false`: left unset, bf16 is "auto"
#: (utils/config normalize_config: bfloat16 on a bf16 GPU, else fp16, float16).
_FLAGS = {"bfloat16": {"bf16": True}, "float16": {"fp16": True}, "float32": {"bf16": False}}
_ATTENTION = {"eager": "eager_attention", "sdpa": "sdp_attention"}


def axolotl_config(path: str, fields: dict, output_dir: str):
    """The smallest axolotl `rl: dpo` config that says `fields`, validated and normalized by axolotl."""
    os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    from axolotl.utils.config import normalize_config, validate_config
    from axolotl.utils.dict import DictDefault
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    from transformers import AutoConfig

    from fixtures.preference_data import preference_dataset

    from ..trl_oracle import model_config

    fields = dict(fields)
    dtype = fields.pop("dtype", "unset")  # unset: axolotl's own default (bf16: auto)
    if dtype != "unset" and dtype not in _FLAGS:
        raise NotApplicable(f"no dtype field: dtype={dtype!r} cannot be asked for (bf16/fp16 flags only)")
    four, eight = fields.pop("load_in_4bit", False), fields.pop("load_in_8bit", False)
    if four and eight:
        raise NotApplicable("4-bit and 8-bit at once cannot be asked for (adapter qlora vs lora)")
    raw = {
        "base_model": path,
        "rl": "dpo",
        "output_dir": output_dir,
        "datasets": [{"path": str(preference_dataset()), "type": "chatml.intel"}],
        "micro_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "num_epochs": 1,
        "learning_rate": 1e-5,
        "sequence_len": 64,
        # This CPU: without it, the schema's default_dataloader_opts asks for one worker per GPU (0 here)
        # with prefetch 256, which transformers' TrainingArguments refuses (the DPO level builds them).
        "dataloader_num_workers": 0,
        **_FLAGS.get(dtype, {}),
    }
    quant = {
        "bnb_4bit_quant_type": fields.pop("bnb_4bit_quant_type", "nf4"),
        "bnb_4bit_use_double_quant": fields.pop("use_bnb_nested_quant", False),
    }
    storage = fields.pop("bnb_4bit_quant_storage", None)
    if storage is not None:
        quant["bnb_4bit_quant_storage"] = storage
    use_peft = fields.pop("use_peft", False) or four or eight
    if four:
        raw.update(load_in_4bit=True, adapter="qlora", bnb_config_kwargs=quant)
    elif eight:
        raw.update(load_in_8bit=True, adapter="lora")
    elif use_peft:
        raw["adapter"] = "lora"
    if use_peft:
        trl = model_config(path)
        model_type = AutoConfig.from_pretrained(path).model_type
        raw.update(lora_r=trl.lora_r, lora_alpha=trl.lora_alpha, lora_dropout=trl.lora_dropout)
        raw["lora_target_modules"] = list(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type])
    if "model_revision" in fields:
        raw["revision_of_model"] = fields.pop("model_revision")
    if "attn_implementation" in fields:
        raw[_ATTENTION[fields.pop("attn_implementation")]] = True
    if "trust_remote_code" in fields:
        raw["trust_remote_code"] = fields.pop("trust_remote_code")
    if fields:
        raise NotApplicable(f"no axolotl field for {sorted(fields)}")
    import torch

    capabilities = {"bf16": True, "n_gpu": 0, "compute_capability": None}
    environment = {"torch_version": torch.__version__.split("+")[0]}
    cfg = validate_config(DictDefault(raw), capabilities=capabilities, env_capabilities=environment)
    normalize_config(cfg)
    return cfg


def _this_cpu_only(topology=None, distributed_type: str = "NO") -> None:
    if (topology is not None and topology.accelerator is not None) or distributed_type != "NO":
        raise NotApplicable("other machines and distributed types are not simulated for axolotl here")


def model_kwargs(path: str, fields: dict, topology) -> dict:
    """What `ModelLoader(cfg, tokenizer).load()` passes to the policy's `from_pretrained` (the
    tokenizer: the suite's word tokenizer; nothing before the load reads it)."""
    import tempfile

    from axolotl.loaders.model import ModelLoader

    from fixtures.preference_data import ROWS
    from policyload.plan.trainer import word_tokenizer

    from ..framework_loads import first_load

    _this_cpu_only(topology)
    with tempfile.TemporaryDirectory() as output_dir:
        cfg = axolotl_config(path, fields, output_dir)
        return first_load(lambda: ModelLoader(cfg, word_tokenizer(ROWS)).load(), path)


#: Modules `axolotl.core.builders` imports at import time that this environment lacks, none of them
#: on the DPO path: Triton (GPU kernels; monkeypatch/trainer/utils.py:17, imported by core/builders/
#: base.py:30 via monkeypatch/trainer/__init__.py) and `trl.experimental.prm` (absent from TRL 1.16;
#: axolotl 0.19.0 pins trl 1.9.0; core/trainers/trl.py:6, for its PRM trainer).
STAND_INS = ("triton", "triton.language", "trl.experimental.prm")


class _Inert:
    """An attribute of a stand-in module: any call returns another, a lone function is returned as
    is (`@triton.jit`); dunder names are absent, so `inspect` and pydantic see no source file."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Inert()

    def __call__(self, *args, **kwargs):
        return args[0] if len(args) == 1 and callable(args[0]) and not kwargs else _Inert()


def _stand_in(name: str):
    import types

    module = types.ModuleType(name)
    module.__path__ = []

    def attribute(key):
        if key.startswith("__"):
            raise AttributeError(key)
        return _Inert() if name.startswith("triton") else type(key, (), {})  # a class: PRMTrainer is subclassed

    module.__getattr__ = attribute
    return module


def trainer_builders():
    """`axolotl.core.builders`, imported with a stand-in for each of `STAND_INS` this environment
    lacks, the stand-ins removed again afterwards. `axolotl.monkeypatch.trainer.utils` (the Triton
    kernels) is dropped from `sys.modules` too, so that axolotl's patch manager
    (loaders/patch_manager.py `_apply_trl_trainer_utils_patches`) still finds no Triton, as on this
    machine, and leaves TRL's `selective_log_softmax` as it is."""
    import importlib
    import importlib.util
    import sys

    if "axolotl.core.builders" in sys.modules:
        return sys.modules["axolotl.core.builders"]
    missing = []
    for name in STAND_INS:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a submodule of a missing package
            found = False
        if not found:
            missing.append(name)
    sys.modules.update({name: _stand_in(name) for name in missing})
    try:
        return importlib.import_module("axolotl.core.builders")
    finally:
        for name in missing:
            del sys.modules[name]
        if "triton" in missing:
            sys.modules.pop("axolotl.monkeypatch.trainer.utils", None)


def dpo_loads(case, path: str) -> dict:
    """`train.py setup_model_and_trainer`'s loads, recorded: `setup_model_and_tokenizer` (the
    policy; with an adapter, ModelLoader only builds the LoraConfig, loaders/model.py:509-524
    `config_only=True`, "the DPO trainer doesn't want the PEFT model loaded over it"), then
    `setup_reference_model` (none with an adapter: train.py:145 "use built-in trl autounwrap"), then
    `utils/trainer.py setup_trainer` -> `HFRLTrainerBuilder.build` (core/builders/rl.py:275-279 hands
    the LoraConfig to its AxolotlDPOTrainer, TRL's DPOTrainer, which builds the PeftModel and decides
    whether to load a reference). The data set is the suite's preference data, loaded as TRL's recipe
    loads it (axolotl's own data pipeline builds no model). Building the training arguments,
    transformers' TrainingArguments is told a bf16 GPU is there (`is_torch_bf16_gpu_available`),
    the capabilities `validate_config` was given."""
    import tempfile
    from unittest import mock

    from axolotl.train import setup_model_and_tokenizer, setup_reference_model
    from datasets import load_dataset

    from fixtures.preference_data import preference_dataset

    from ..framework_loads import every_framework_load, loads_shape

    if case.policy != "path":
        raise NotApplicable("train() loads the policy from base_model; no model instance is taken")
    if case.mode in ("precompute", "4bit-nopeft"):
        raise NotApplicable(f"{case.mode}: not a field of axolotl's DPO config (4-bit is adapter: qlora)")
    _this_cpu_only(case.topology, case.distributed_type)
    trainer_builders()
    from axolotl.utils.trainer import setup_trainer

    data = load_dataset(str(preference_dataset()))["train"]
    with tempfile.TemporaryDirectory() as output_dir, mock.patch.dict(os.environ):
        cfg = axolotl_config(path, case.fields, output_dir)
        with (
            every_framework_load() as loads,
            mock.patch("transformers.training_args.is_torch_bf16_gpu_available", lambda: True),
        ):
            policy, tokenizer, peft_config, _ = setup_model_and_tokenizer(cfg)
            reference = setup_reference_model(cfg, tokenizer)
            trainer = setup_trainer(cfg, data, None, policy, tokenizer, None, 1, reference, peft_config)
        return loads_shape(loads, trainer.model, trainer.ref_model, path)


IMPLEMENTATION = Implementation(
    name="axolotl",
    divergences=Path(__file__).with_name("axolotl.toml"),
    model_kwargs=model_kwargs,
    dpo_loads=dpo_loads,
    missing={
        "quantization": "built inline in loaders/model.py ModelLoader (no function); see the recipe level",
        "device-map": "decided inline in loaders/model.py ModelLoader (no function); see the recipe level",
    },
    description=(
        "axolotl 0.19.0: validate_config + ModelLoader, train.py's policy and reference loads, its DPOTrainer's adapter"
    ),
    requires=("axolotl", "impl-axolotl"),
)
