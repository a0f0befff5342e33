"""oumi 0.9: `core/configs/params/peft_params.py`'s `PeftParams.to_bits_and_bytes`, the config
`builders/models.py` `build_huggingface_model` passes as `quantization_config` for a q_lora run,
called unmodified on its own `PeftParams` (tox -e impl-oumi).

Installed --no-deps (its requirements pin other transformers / trl releases), plus omegaconf;
reached without the `oumi`, `oumi.core`, `oumi.core.configs` package `__init__`s, which import
every config class, the registry and the launcher.

How a case maps onto oumi's configs: 4-bit / 8-bit -> `q_lora=True, q_lora_bits=4 / 8` (one
field: both at once cannot be said; without quantization oumi passes no bitsandbytes config);
the quant type, nested quantization and quant storage -> the `PeftParams` fields of the same
names (None keeps oumi's default, "uint8"). The case's dtype is oumi's *model* dtype
(`ModelParams.torch_dtype_str`), which never reaches `to_bits_and_bytes`: the 4-bit compute dtype
is a `PeftParams` field of its own, left at its default. Dtypes that are not load dtypes cannot
be said (ModelParams refuses them).

The device map has no function: `build_huggingface_model` decides it inline
(`model_params.device_map`, "auto" by default, `cuda:<local rank>` when distributed).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from unittest import mock

from ..implementation import Implementation, NotApplicable
from . import import_skipping_package_inits

_LOAD_DTYPES = (None, "auto", "bfloat16", "float16", "float32")


def quantization_config(fields: dict):
    if fields["load_in_4bit"] and fields["load_in_8bit"]:
        raise NotApplicable("one q_lora_bits field: 4-bit and 8-bit at once cannot be asked for")
    if fields["dtype"] not in _LOAD_DTYPES:
        raise NotApplicable(f"dtype={fields['dtype']!r} is not a model dtype ModelParams accepts")
    if not (fields["load_in_4bit"] or fields["load_in_8bit"]):
        return None  # no q_lora: build_huggingface_model passes no bitsandbytes config
    module = import_skipping_package_inits("oumi.core.configs.params.peft_params", "oumi", "impl-oumi")
    storage = fields["bnb_4bit_quant_storage"]
    storage = {} if storage is None else {"bnb_4bit_quant_storage": storage}  # None: oumi's default
    params = module.PeftParams(
        q_lora=True,
        q_lora_bits=4 if fields["load_in_4bit"] else 8,
        bnb_4bit_quant_type=fields["bnb_4bit_quant_type"],
        use_bnb_nested_quant=fields["use_bnb_nested_quant"],
        **storage,
    )
    return params.to_bits_and_bytes()


# --- the recipe and DPO-plan levels: its own TrainingConfig and build_model -----------------------


def training_config(path: str, fields: dict, output_dir: str):
    """The smallest oumi DPO training config (its YAML's `model`, `training`, `peft` sections) that
    says `fields`, built and checked by oumi's own `TrainingConfig` (`finalize_and_validate`).
    Unset fields keep oumi's defaults; 4/8-bit is `peft.q_lora` with `training.use_peft` (oumi
    passes a bitsandbytes config only for a q_lora PEFT run); `use_peft` takes TRL's `ModelConfig`
    LoRA values (r, alpha, dropout; the targets stay oumi's default, PEFT's per architecture)."""
    from oumi.core.configs import (
        DataParams,
        DatasetParams,
        DatasetSplitParams,
        ModelParams,
        PeftParams,
        TrainerType,
        TrainingConfig,
        TrainingParams,
    )

    from ..trl_oracle import model_config

    fields = dict(fields)
    dtype = fields.pop("dtype", None)
    if dtype not in _LOAD_DTYPES:
        raise NotApplicable(f"dtype={dtype!r} is not a model dtype ModelParams accepts")
    four, eight = fields.pop("load_in_4bit", False), fields.pop("load_in_8bit", False)
    if four and eight:
        raise NotApplicable("one q_lora_bits field: 4-bit and 8-bit at once cannot be asked for")
    model = {"model_name": path}
    if dtype is not None:
        model["torch_dtype_str"] = dtype
    for ours, theirs in (("model_revision", "model_revision"), ("attn_implementation", "attn_implementation")):
        if ours in fields:
            model[theirs] = fields.pop(ours)
    if "trust_remote_code" in fields:
        model["trust_remote_code"] = fields.pop("trust_remote_code")
    peft = {}
    storage = fields.pop("bnb_4bit_quant_storage", None)
    quant = {
        "bnb_4bit_quant_type": fields.pop("bnb_4bit_quant_type", "nf4"),
        "use_bnb_nested_quant": fields.pop("use_bnb_nested_quant", False),
        **({} if storage is None else {"bnb_4bit_quant_storage": storage}),
    }
    use_peft = fields.pop("use_peft", False) or four or eight
    if four or eight:
        peft.update(q_lora=True, q_lora_bits=4 if four else 8, **quant)
    if use_peft:
        trl = model_config(path)
        peft.update(lora_r=trl.lora_r, lora_alpha=trl.lora_alpha, lora_dropout=trl.lora_dropout)
    if fields:
        raise NotApplicable(f"no oumi field for {sorted(fields)}")
    data = DataParams(train=DatasetSplitParams(datasets=[DatasetParams(dataset_name="policyload_preferences")]))
    config = TrainingConfig(
        data=data,  # a name: building the model does not read it
        model=ModelParams(**model),
        training=TrainingParams(trainer_type=TrainerType.TRL_DPO, use_peft=use_peft, output_dir=output_dir),
        peft=PeftParams(**peft),
    )
    config.finalize_and_validate()
    return config


@contextlib.contextmanager
def _sees(topology):
    """oumi's device decision (core/distributed.py `get_device_rank_info`: WORLD_SIZE, LOCAL_RANK, ...
    from the environment, cached) sees `topology`: local rank N of an N+1-process run, else one
    process. oumi asks no accelerator question here: "auto" unless distributed."""
    from oumi.core.distributed import get_device_rank_info

    rank, size = str(topology.local_process_index), str(topology.local_process_index + 1)
    world = {"WORLD_SIZE": size, "LOCAL_WORLD_SIZE": size, "LOCAL_RANK": rank, "RANK": rank}
    get_device_rank_info.cache_clear()  # functools.cache: read once per process otherwise
    try:
        with mock.patch.dict(os.environ, world if topology.local_process_index else {}):
            yield
    finally:
        get_device_rank_info.cache_clear()


def _models():
    return import_skipping_package_inits("oumi.builders.models", "oumi", "impl-oumi")


def model_kwargs(path: str, fields: dict, topology) -> dict:
    """What `build_model` (train.py's call: the model params, the peft params of a PEFT run) passes
    to the policy's `from_pretrained`."""
    import tempfile

    from ..framework_loads import first_load

    models = _models()
    with tempfile.TemporaryDirectory() as output_dir:
        config = training_config(path, fields, output_dir)
        peft = config.peft if config.training.use_peft else None
        with _sees(topology):
            return first_load(lambda: models.build_model(model_params=config.model, peft_params=peft), path)


def dpo_loads(case, path: str) -> dict:
    """What oumi's `train()` loads for a TRL_DPO config, by its own calls: `build_tokenizer`,
    `build_model` (+ `build_peft_model` for a PEFT run), then its TRL_DPO trainer builder
    (`builders/training.py build_trainer`: TRL's DPOTrainer given the model instance, which makes
    the reference). The data set is the suite's preference data, loaded as TRL's recipe loads it."""
    import tempfile

    from datasets import load_dataset

    from fixtures.preference_data import preference_dataset

    from ..framework_loads import every_framework_load, loads_shape

    if case.policy != "path":
        raise NotApplicable("train() builds the policy from model.model_name; no model instance is taken")
    if case.mode == "4bit-nopeft":
        raise NotApplicable("4-bit is peft.q_lora, a PEFT run: a 4-bit policy without an adapter cannot be asked for")
    if case.distributed_type != "NO" or case.topology is not None:
        raise NotApplicable("oumi's distributed runs (fsdp/deepspeed params, torchrun) are not simulated here")
    models = _models()
    from oumi.builders.training import build_trainer
    from oumi.core.configs import TrainerType

    with tempfile.TemporaryDirectory() as output_dir:
        config = training_config(path, case.fields, output_dir)
        config.training.trainer_kwargs["precompute_ref_log_probs"] = case.mode == "precompute"
        use_peft = config.training.use_peft
        data = load_dataset(str(preference_dataset()))["train"]
        with _sees(case.topology or _one_process()), every_framework_load() as loads:
            tokenizer = models.build_tokenizer(config.model)
            policy = models.build_model(model_params=config.model, peft_params=config.peft if use_peft else None)
            if use_peft:
                policy = models.build_peft_model(policy, config.training.enable_gradient_checkpointing, config.peft)
            trainer = build_trainer(TrainerType.TRL_DPO, processor=None)(
                model=policy, processing_class=tokenizer, args=config.training, train_dataset=data
            )
        dpo = trainer._hf_trainer
        return loads_shape(loads, dpo.model, dpo.ref_model, path)


def _one_process():
    from policyload import Topology

    return Topology(None)


IMPLEMENTATION = Implementation(
    name="oumi",
    divergences=Path(__file__).with_name("oumi.toml"),
    quantization_config=quantization_config,
    model_kwargs=model_kwargs,
    dpo_loads=dpo_loads,
    missing={
        "device-map": "decided inline in builders/models.py build_huggingface_model, no function",
    },
    description="oumi 0.9: PeftParams.to_bits_and_bytes, TrainingConfig + build_model, train()'s DPO loads",
    requires=("oumi", "impl-oumi"),
)
