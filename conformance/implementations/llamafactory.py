"""LlamaFactory 0.9.5: `model/model_utils/quantization.py`'s `configure_quantization`, the function
that puts `quantization_config` and `device_map` into its `from_pretrained` keywords for on-the-fly
bitsandbytes quantization, called unmodified with its own `ModelArguments` (tox -e impl-llamafactory).

Installed --no-deps (its requirements pin transformers and pull vLLM-era extras), plus omegaconf,
which `hparams/model_args.py` imports. Reached without `llamafactory.model`'s and
`llamafactory.hparams`' `__init__`, which import the whole loader, trainer and data stack.

How a case maps onto LlamaFactory's arguments, and what it cannot express (`NotApplicable`):
- 4-bit / 8-bit -> `quantization_bit` 4 / 8 (one field: both at once cannot be said);
- dtype -> `compute_dtype` as its parser sets it: bf16: true -> bfloat16, fp16: true -> float16,
  neither -> `infer_optim_dtype` of the checkpoint, float32 for a float32 checkpoint. There is no
  dtype field: None, "auto" and invalid dtype names cannot be said;
- `bnb_4bit_quant_type` -> `quantization_type` (its parser accepts only "fp4" and "nf4");
- `use_bnb_nested_quant` -> `double_quantization`; there is no quant storage field.

The recipe and DPO-plan levels run its own DPO path: `hparams/parser.py get_train_args` parses
and checks a DPO training config (`train_config`), then `model/loader.py load_model` (the policy)
and `train/trainer_utils.py create_ref_model` (the reference) run as `train/dpo/workflow.py
run_dpo` calls them, with `from_pretrained` intercepted (`conformance/framework_loads.py`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from unittest import mock

import torch

from ..implementation import Implementation, NotApplicable
from . import import_skipping_package_inits

_COMPUTE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_QUANT_TYPES = ("fp4", "nf4")


def _module(name: str):
    return import_skipping_package_inits(f"llamafactory.{name}", "llamafactory", "impl-llamafactory")


def _configure(quantization_bit: int, compute_dtype, quant_type: str = "nf4", double: bool = True) -> dict:
    """The keywords `configure_quantization` adds for a plain (not pre-quantized) checkpoint."""
    from transformers import LlamaConfig

    arguments = _module("hparams.model_args").ModelArguments(
        model_name_or_path="model",
        quantization_bit=quantization_bit,
        quantization_type=quant_type,
        double_quantization=double,
    )
    arguments.compute_dtype = compute_dtype  # as hparams/parser.py sets it from bf16 / fp16
    init_kwargs = {}
    _module("model.model_utils.quantization").configure_quantization(
        LlamaConfig(), None, arguments, is_trainable=True, init_kwargs=init_kwargs
    )
    return init_kwargs


def quantization_config(fields: dict):
    if fields["load_in_4bit"] and fields["load_in_8bit"]:
        raise NotApplicable("one quantization_bit field: 4-bit and 8-bit at once cannot be asked for")
    if fields["dtype"] not in _COMPUTE_DTYPES:
        raise NotApplicable(f"no dtype field: dtype={fields['dtype']!r} cannot be asked for")
    if fields["bnb_4bit_quant_type"] not in _QUANT_TYPES or fields["bnb_4bit_quant_storage"] is not None:
        raise NotApplicable("quantization_type is 'fp4' or 'nf4', and there is no quant storage field")
    bits = 4 if fields["load_in_4bit"] else 8 if fields["load_in_8bit"] else None
    if bits is None:
        return None  # configure_quantization is not reached without quantization_bit
    dtype = _COMPUTE_DTYPES[fields["dtype"]]
    return _configure(bits, dtype, fields["bnb_4bit_quant_type"], fields["use_bnb_nested_quant"]).get(
        "quantization_config"
    )


def device_map(topology):
    """The `device_map` of an 8-bit load on `topology`: `get_current_device()` reads
    transformers' `is_torch_*_available` (imported into extras/misc.py by those names) and LOCAL_RANK."""
    with _sees(topology):
        return _configure(8, torch.float32).get("device_map", "<not set>")


# --- the recipe and DPO-plan levels: its own parser, load_model and create_ref_model --------------

#: TRL's `ModelConfig` attention names -> LlamaFactory's `flash_attn` (extras/constants.py AttentionFunction).
_FLASH_ATTN = {"eager": "disabled", "sdpa": "sdpa", "flash_attention_2": "fa2"}


def _bridge_trl() -> None:
    """`model/loader.py` and `train/trainer_utils.py` import `AutoModelForCausalLMWithValueHead` from
    trl, which TRL 1.16 no longer has (LlamaFactory 0.9.5 pins trl<=0.24): a stand-in class under
    that name, used only for PPO's value head (`add_valuehead=True`), never on the DPO path."""
    import trl

    if not hasattr(trl, "AutoModelForCausalLMWithValueHead"):
        trl.AutoModelForCausalLMWithValueHead = type("AutoModelForCausalLMWithValueHead", (), {})


def _with_init(name: str):
    """`llamafactory.<name>` with its `__init__` run (trainer_utils imports names from hparams' and
    model's), replacing a bare package registered by an earlier level's import."""
    module = sys.modules.get(f"llamafactory.{name}")
    if module is not None and getattr(module, "__file__", None) is None:
        del sys.modules[f"llamafactory.{name}"]
    return _module(name)


def _train_modules():
    """The parser, the loader and trainer_utils, their packages' `__init__`s run."""
    _bridge_trl()
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")  # its documented switch: it pins transformers<=5.6
    _with_init("hparams")
    _with_init("model")
    return _module("hparams.parser"), _module("model.loader"), _module("train.trainer_utils")


def train_config(path: str, fields: dict, output_dir: str) -> dict:
    """The smallest LlamaFactory DPO training config (its YAML's keys) that says `fields`.

    The dtype is its training precision (bf16 / fp16; float32: neither); unset fields keep
    LlamaFactory's defaults; `use_peft` is `finetuning_type: lora` with TRL's `ModelConfig` LoRA
    values (r, alpha, dropout; the target stays LlamaFactory's default, "all")."""
    from ..trl_oracle import model_config

    fields = dict(fields)
    dtype = fields.pop("dtype", "float32")
    if dtype not in _COMPUTE_DTYPES:
        raise NotApplicable(f"no dtype field: dtype={dtype!r} cannot be asked for (bf16/fp16 flags only)")
    if fields.pop("bnb_4bit_quant_storage", None) is not None:
        raise NotApplicable("no quant storage field")
    four, eight = fields.pop("load_in_4bit", False), fields.pop("load_in_8bit", False)
    if four and eight:
        raise NotApplicable("one quantization_bit field: 4-bit and 8-bit at once cannot be asked for")
    quant_type = fields.pop("bnb_4bit_quant_type", "nf4")
    if quant_type not in _QUANT_TYPES:
        raise NotApplicable(f"quantization_type is 'fp4' or 'nf4', not {quant_type!r}")
    config = {
        "model_name_or_path": path,
        "stage": "dpo",
        "do_train": True,
        "dataset": "policyload_preferences",  # a name: parsing does not read it
        "output_dir": output_dir,
        "report_to": "none",
        "use_cpu": True,  # this machine: transformers' TrainingArguments refuses bf16 on CPU without it
        "bf16": dtype == "bfloat16",
        "fp16": dtype == "float16",
    }
    if four or eight:
        config["quantization_bit"] = 4 if four else 8
        config["quantization_type"] = quant_type
        config["double_quantization"] = fields.pop("use_bnb_nested_quant", False)
    fields.pop("use_bnb_nested_quant", None)
    if "model_revision" in fields:
        config["model_revision"] = fields.pop("model_revision")
    if "attn_implementation" in fields:
        config["flash_attn"] = _FLASH_ATTN[fields.pop("attn_implementation")]
    if "trust_remote_code" in fields:
        config["trust_remote_code"] = fields.pop("trust_remote_code")
    if fields.pop("use_peft", False):
        trl = model_config(path)
        config.update(finetuning_type="lora", lora_rank=trl.lora_r, lora_alpha=trl.lora_alpha)
        config["lora_dropout"] = trl.lora_dropout
    else:
        config["finetuning_type"] = "full"
    if fields:
        raise NotApplicable(f"no LlamaFactory field for {sorted(fields)}")
    return config


class _RankedOs:
    """`os` with LOCAL_RANK set to a simulated local rank, as `os.getenv` answers; the rest is `os`'s."""

    def __init__(self, rank: int):
        self._rank = str(rank)

    def getenv(self, key, default=None):
        return self._rank if key == "LOCAL_RANK" else os.getenv(key, default)

    def __getattr__(self, name):
        return getattr(os, name)


@contextlib.contextmanager
def _sees(topology, distributed_type: str = "NO"):
    """LlamaFactory's device decision (`get_current_device`) sees `topology`; under FSDP its
    `patch_config` sees transformers' `is_fsdp_enabled()` true (imported into model/patcher.py
    by that name)."""
    misc = _module("extras.misc")
    available = {
        "is_torch_cuda_available": topology.accelerator == "cuda",
        "is_torch_xpu_available": topology.accelerator == "xpu",
        "is_torch_npu_available": False,
        "is_torch_mps_available": False,
    }
    with contextlib.ExitStack() as stack:
        replacements = {name: (lambda value=value: value) for name, value in available.items()}
        stack.enter_context(mock.patch.dict(misc.__dict__, replacements))
        # The rank as get_current_device reads it (`os.getenv` in extras/misc.py), not in this process's
        # environment, where transformers' TrainingArguments would start a process group for it.
        stack.enter_context(mock.patch.dict(misc.__dict__, {"os": _RankedOs(topology.local_process_index)}))
        if distributed_type == "FSDP":
            patcher = _module("model.patcher")
            stack.enter_context(mock.patch.dict(patcher.__dict__, {"is_fsdp_enabled": lambda: True}))
        yield


def _parsed(path: str, fields: dict, output_dir: str):
    parser, _, _ = _train_modules()
    model_args, _, _, finetuning_args, _ = parser.get_train_args(train_config(path, fields, output_dir))
    return model_args, finetuning_args


def model_kwargs(path: str, fields: dict, topology) -> dict:
    """What `load_model` (its DPO workflow's call, `is_trainable=True`) passes to the policy's
    `from_pretrained`, after `get_train_args` parsed the config; the tokenizer is None (only
    GPTQ/AWQ calibration and vocab resizing read it, neither reached here). A 4/8-bit case is
    asked with `finetuning_type: lora`: its parser refuses quantization with a full fine-tune
    ("Quantization is only compatible with the LoRA or OFT method", hparams/parser.py
    `_verify_model_args`), and TRL's recipe passes the same keywords with or without `use_peft`."""
    import tempfile

    from ..framework_loads import first_load

    _, loader, _ = _train_modules()
    with tempfile.TemporaryDirectory() as output_dir, _sees(topology):
        quantized = fields.get("load_in_4bit") or fields.get("load_in_8bit")
        model_args, finetuning_args = _parsed(path, {**fields, "use_peft": bool(quantized)}, output_dir)
        return first_load(lambda: loader.load_model(None, model_args, finetuning_args, is_trainable=True), path)


def dpo_loads(case, path: str) -> dict:
    """What `train/dpo/workflow.py run_dpo` loads, by its own calls: `load_tokenizer`, `load_model`
    (the policy, adapter included), then `create_ref_model` where `finetuning_args.use_ref_model`."""
    import tempfile

    from ..framework_loads import every_framework_load, loads_shape

    if case.policy != "path":
        raise NotApplicable("run_dpo loads the policy from model_name_or_path; no model instance is taken")
    if case.mode == "precompute":
        raise NotApplicable("no precompute_ref_log_probs: the reference is loaded and kept")
    if case.distributed_type == "DEEPSPEED":
        raise NotApplicable("its load reads is_deepspeed_zero3_enabled(), a ZeRO stage the case does not name")
    from policyload import Topology

    _, loader, trainer_utils = _train_modules()
    with tempfile.TemporaryDirectory() as output_dir, _sees(case.topology or Topology(None), case.distributed_type):
        model_args, finetuning_args = _parsed(path, case.fields, output_dir)
        with every_framework_load(simulated_accelerator=case.topology is not None) as loads:
            tokenizer = loader.load_tokenizer(model_args)["tokenizer"]
            policy = loader.load_model(tokenizer, model_args, finetuning_args, is_trainable=True)
            reference = None
            if finetuning_args.use_ref_model:  # workflow.py: ref_model is None and do_train
                reference = trainer_utils.create_ref_model(model_args, finetuning_args)
        return loads_shape(loads, policy, reference, path)


IMPLEMENTATION = Implementation(
    name="llamafactory",
    divergences=Path(__file__).with_name("llamafactory.toml"),
    quantization_config=quantization_config,
    device_map=device_map,
    model_kwargs=model_kwargs,
    dpo_loads=dpo_loads,
    description="LlamaFactory 0.9.5: configure_quantization, get_train_args + load_model, run_dpo's loads",
    requires=("llamafactory", "impl-llamafactory"),
)
