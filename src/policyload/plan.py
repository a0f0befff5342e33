"""The DPO trainer's full load plan: which models TRL loads for a `LoadSpec`, with which keywords,
and what they cost in bytes, answered from `config.json` alone.

Describes **TRL 1.16** (`trainer/dpo_trainer.py`, `DPOTrainer.__init__`; `trainer/utils.py`
`create_model_from_path`; `scripts/dpo.py`), read line by line:

* The recipe builds `model_init_kwargs = {revision, trust_remote_code, attn_implementation, dtype}`
  (`scripts/dpo.py`; `dtype` as the string of `ModelConfig.dtype`) and passes the checkpoint path,
  `quantization_config=get_quantization_config(model_args)`, `peft_config=get_peft_config(model_args)`.
* Policy: `model_init_kwargs` copied, plus the trainer's `quantization_config`, plus `device_map=None`
  when `distributed_type in ["MULTI_GPU", "DEEPSPEED"]`; `setdefault("trust_remote_code", ...)`.
  `create_model_from_path` then turns a dtype name into `torch.<name>` and, when `device_map` is
  absent, sets it to None on a CPU/MPS process and `"auto"` otherwise (so under NO and FSDP an
  accelerator process loads with `device_map="auto"`).
* Policy given as an instance: `model_init_kwargs` are ignored for it (a warning); a trainer
  `quantization_config` is a ValueError. This plan assumes `DPOConfig.model_init_kwargs` is None then
  (its default), so the reference's keywords come from the setdefaults alone.
* Reference, when `ref_model` is None: none if the model is a PEFT model (adapters are disabled for
  reference passes) or if `precompute_ref_log_probs and not is_fsdp_enabled`. Otherwise one load from
  disk, `create_model_from_path(get_config_model_id(policy.config), **kw)`: `kw` = a copy of
  `model_init_kwargs` + the trainer's `quantization_config` + `device_map=None` for MULTI_GPU and
  DEEPSPEED (FSDP keeps `create_model_from_path`'s default) + `setdefault` of `trust_remote_code`,
  `dtype` (= `policy.dtype`) and `attn_implementation` (= `policy.config._attn_implementation`).
  Under FSDP with `precompute_ref_log_probs`, that reference is freed once precomputed
  (`self.ref_model = None` after `_precompute_ref_logps`).
  Consequence: a policy instance gets a reference without `revision`, i.e. from the default branch.
* Adapter (`--use_peft`): `get_peft_model(model, LoraConfig(r, lora_alpha, target_modules, bias="none"))`.
  PEFT (read in peft 0.21.2, `tuners/lora/layer.py`, `tuners_utils.py`) creates `lora_A = Linear(in, r)`
  and `lora_B = Linear(r, out)`, moves them to the base layer's dtype when that is floating, and
  `cast_adapter_dtype` upcasts float16/bfloat16 adapters to float32 (`autocast_adapter_dtype=True`).
  TRL passes `autocast_adapter_dtype=False` for DeepSpeed ZeRO-3 with an unquantized model (adapter
  stays in the load dtype), and for a quantized model casts every trainable parameter to bfloat16
  after `get_peft_model`. DPOTrainer 1.16 does not call `prepare_model_for_kbit_training` (only the
  experimental CPO/ORPO trainers do), so a k-bit policy's unquantized parameters stay in the load dtype.
  Target modules default to PEFT's `TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING` for the
  model type (a copy of its decoder entries is `PEFT_DEFAULT_TARGETS`).

Older releases, as reported in the issue (reported, not verified): TRL < 1.8 loaded the reference
without the `device_map=None` rule and without the `dtype`/`attn_implementation` setdefaults (those
are new in 1.16); TRL 1.2 loaded no reference at all with `precompute_ref_log_probs`, FSDP included.

`Load.kwargs` are the keywords that reach `from_pretrained` (after `create_model_from_path`), keyed
as TRL passes them; a value the trainer reads off the policy instance is a `FromPolicy`.

Bytes (`bill`) are per process, for the models resident once the trainer is constructed. The peak is
a PROVISIONAL estimate until `memory_model` predicts one: policy + reference + adapter + the largest
single parameter in the load dtype (transformers materializes and converts one tensor at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from .spec import DTYPES, LoadSpec
from .topology import Topology

#: The TRL release this plan describes.
TRL_RELEASE = "1.16"
#: accelerate `DistributedType` values whose load rules differ in DPOTrainer 1.16.
DISTRIBUTED_TYPES = ("NO", "MULTI_GPU", "DEEPSPEED", "FSDP")
ROLES = ("policy", "reference")
#: "disk": `from_pretrained`; "instance": given by the caller; "copy": a deep copy (no 1.16 path).
SOURCES = ("disk", "instance", "copy")
ZERO_STAGES = (None, 0, 1, 2, 3)

#: PEFT's default LoRA targets per model type (peft 0.21.2 `utils/constants.py`, decoder entries).
PEFT_DEFAULT_TARGETS = {
    "gpt2": ("c_attn",),
    "bloom": ("query_key_value",),
    "opt": ("q_proj", "v_proj"),
    "gptj": ("q_proj", "v_proj"),
    "gpt_neox": ("query_key_value",),
    "gpt_neo": ("q_proj", "v_proj"),
    "llama": ("q_proj", "v_proj"),
    "gpt_bigcode": ("c_attn",),
    "falcon": ("query_key_value",),
    "mistral": ("q_proj", "v_proj"),
    "mixtral": ("q_proj", "v_proj"),
    "phi": ("q_proj", "v_proj", "fc1", "fc2"),
    "gemma": ("q_proj", "v_proj"),
    "gemma2": ("q_proj", "v_proj"),
    "gemma3_text": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "qwen3": ("q_proj", "v_proj"),
}


def _reject(owner: str, name: str, value, accepted) -> ValueError:
    return ValueError(f"{owner}.{name}={value!r} is not accepted; accepted: {accepted}")


@dataclass(frozen=True)
class FromPolicy:
    """A keyword value DPOTrainer reads off the loaded policy (`policy.<attribute>`)."""

    attribute: str

    def __repr__(self) -> str:
        return f"<policy.{self.attribute}>"


@dataclass(frozen=True)
class DPOOptions:
    """The training options that change what DPOTrainer loads. LoRA defaults are TRL's `ModelConfig`."""

    use_peft: bool = False
    precompute_ref_log_probs: bool = False
    distributed_type: str = "NO"
    deepspeed_zero_stage: int | None = None
    policy_as_instance: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    #: None: PEFT's default for the model type; "all-linear"; a regex string; or module names.
    lora_target_modules: tuple[str, ...] | str | None = None

    def __post_init__(self) -> None:
        for name in ("use_peft", "precompute_ref_log_probs", "policy_as_instance"):
            if not isinstance(getattr(self, name), bool):
                raise _reject("DPOOptions", name, getattr(self, name), "True or False")
        if self.distributed_type not in DISTRIBUTED_TYPES:
            raise _reject("DPOOptions", "distributed_type", self.distributed_type, DISTRIBUTED_TYPES)
        if self.deepspeed_zero_stage not in ZERO_STAGES:
            raise _reject("DPOOptions", "deepspeed_zero_stage", self.deepspeed_zero_stage, ZERO_STAGES)
        if self.deepspeed_zero_stage is not None and self.distributed_type != "DEEPSPEED":
            raise ValueError(
                f"DPOOptions.deepspeed_zero_stage={self.deepspeed_zero_stage!r} is not accepted with "
                f"distributed_type={self.distributed_type!r}; accepted: None unless distributed_type='DEEPSPEED'"
            )
        if isinstance(self.lora_r, bool) or not isinstance(self.lora_r, int) or self.lora_r < 1:
            raise _reject("DPOOptions", "lora_r", self.lora_r, "an integer >= 1")
        if isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, (int, float)) or self.lora_alpha <= 0:
            raise _reject("DPOOptions", "lora_alpha", self.lora_alpha, "a number > 0")
        if not isinstance(self.lora_dropout, (int, float)) or not 0 <= self.lora_dropout < 1:
            raise _reject("DPOOptions", "lora_dropout", self.lora_dropout, "a number in [0, 1)")
        targets = self.lora_target_modules
        if isinstance(targets, list):
            object.__setattr__(self, "lora_target_modules", targets := tuple(targets))
        if not (
            targets is None
            or (isinstance(targets, str) and targets)
            or (isinstance(targets, tuple) and targets and all(isinstance(t, str) and t for t in targets))
        ):
            raise _reject("DPOOptions", "lora_target_modules", targets, "None, 'all-linear', a regex, or module names")


@dataclass(frozen=True)
class Load:
    """One model DPOTrainer holds: loaded from disk (`kwargs` reach `from_pretrained`) or given."""

    role: str
    source: str
    kwargs: dict | None
    freed_after_precompute: bool = False

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise _reject("Load", "role", self.role, ROLES)
        if self.source not in SOURCES:
            raise _reject("Load", "source", self.source, SOURCES)


@dataclass(frozen=True)
class AdapterPlan:
    """The LoRA adapter `get_peft_model` adds. `dtype` None: the policy's load dtype."""

    r: int
    alpha: int | float
    dropout: float
    target_modules: tuple[str, ...] | str | None
    dtype: str | None


@dataclass(frozen=True)
class DPOPlan:
    spec: LoadSpec
    options: DPOOptions
    loads: tuple[Load, ...]
    adapter: AdapterPlan | None
    trl_release: str = field(default=TRL_RELEASE)

    def load(self, role: str) -> Load | None:
        return next((load for load in self.loads if load.role == role), None)

    @property
    def policy(self) -> Load:
        return self.load("policy")

    @property
    def reference(self) -> Load | None:
        return self.load("reference")


def _device_map_default(topology: Topology):
    # create_model_from_path: `None if PartialState().device.type in ("cpu", "mps") else "auto"`
    return None if topology.accelerator is None else "auto"


def _recipe_model_init_kwargs(spec: LoadSpec) -> dict:
    # scripts/dpo.py: dict(revision=..., trust_remote_code=..., attn_implementation=..., dtype=model_args.dtype)
    return {
        "revision": spec.model_revision,
        "trust_remote_code": spec.trust_remote_code,
        "attn_implementation": spec.attn_implementation,
        "dtype": spec.dtype,
    }


def _from_pretrained_kwargs(kwargs: dict, topology: Topology) -> dict:
    """`create_model_from_path`'s own steps: dtype name -> torch dtype, device_map default."""
    from .kwargs import torch_dtype_argument

    kwargs = dict(kwargs)
    if isinstance(kwargs.get("dtype"), str):
        kwargs["dtype"] = torch_dtype_argument(kwargs["dtype"])
    elif "dtype" not in kwargs:
        kwargs["dtype"] = torch_dtype_argument("float32")
    if "device_map" not in kwargs:
        kwargs["device_map"] = _device_map_default(topology)
    return kwargs


def plan_dpo_loads(spec: LoadSpec, options: DPOOptions | None = None, topology: Topology | None = None) -> DPOPlan:
    """Every model TRL 1.16's DPOTrainer holds for `spec` and `options`, with its keywords.

    `topology` (default: this process's) decides `create_model_from_path`'s device_map default.
    Raises ValueError for combinations TRL or transformers' Trainer refuse.
    """
    from .kwargs import build_quantization_config

    options = options or DPOOptions()
    if spec.quantization != "none" and not options.use_peft:
        # transformers Trainer._validate_model: "You cannot perform fine-tuning on purely quantized models."
        raise ValueError(
            f"LoadSpec.load_in_{spec.quantization}=True is not accepted with DPOOptions.use_peft=False: "
            "transformers' Trainer refuses to fine-tune a purely quantized model; accepted: use_peft=True "
            "or no quantization"
        )
    topology = topology or Topology.detect()
    distributed_device_map = options.distributed_type in ("MULTI_GPU", "DEEPSPEED")
    quantization_config = None if options.policy_as_instance else build_quantization_config(spec)

    if options.policy_as_instance:
        policy = Load("policy", "instance", None)
        model_init_kwargs: dict = {}  # DPOConfig.model_init_kwargs=None; ignored for an instance anyway
    else:
        model_init_kwargs = _recipe_model_init_kwargs(spec)
        kwargs = dict(model_init_kwargs)
        if quantization_config is not None:
            kwargs["quantization_config"] = quantization_config
        if distributed_device_map:  # dpo_trainer.py: if ... distributed_type in ["MULTI_GPU", "DEEPSPEED"]
            kwargs["device_map"] = None
        kwargs.setdefault("trust_remote_code", spec.trust_remote_code)
        policy = Load("policy", "disk", _from_pretrained_kwargs(kwargs, topology))

    loads = [policy]
    fsdp = options.distributed_type == "FSDP"
    # dpo_trainer.py: if is_peft_model(self.model) or (args.precompute_ref_log_probs and not self.is_fsdp_enabled)
    if not (options.use_peft or (options.precompute_ref_log_probs and not fsdp)):
        kwargs = dict(model_init_kwargs)
        if quantization_config is not None:
            kwargs["quantization_config"] = quantization_config
        if distributed_device_map:
            kwargs["device_map"] = None
        kwargs.setdefault("trust_remote_code", spec.trust_remote_code)
        kwargs.setdefault("dtype", _policy_dtype(spec))
        kwargs.setdefault("attn_implementation", spec.attn_implementation or FromPolicy("config._attn_implementation"))
        loads.append(
            Load(
                "reference",
                "disk",
                _from_pretrained_kwargs(kwargs, topology),
                freed_after_precompute=options.precompute_ref_log_probs and fsdp,
            )
        )

    adapter = None
    if options.use_peft:
        adapter = AdapterPlan(
            r=options.lora_r,
            alpha=options.lora_alpha,
            dropout=options.lora_dropout,
            target_modules=options.lora_target_modules,
            dtype=_adapter_dtype(spec, options),
        )
    return DPOPlan(spec, options, tuple(loads), adapter)


def _policy_dtype(spec: LoadSpec):
    """`self.model.dtype` for an instance loaded as `spec` says: known unless the checkpoint decides."""
    import torch

    return FromPolicy("dtype") if spec.dtype in (None, "auto") else getattr(torch, spec.dtype)


def _adapter_dtype(spec: LoadSpec, options: DPOOptions) -> str | None:
    if spec.quantization != "none":
        return "bfloat16"  # dpo_trainer.py: `if _is_quantized_model: ... param.data.to(torch.bfloat16)`
    if options.deepspeed_zero_stage == 3:
        return None  # autocast_adapter_dtype=False: the adapter stays in the base layer's dtype
    return "float32"  # PEFT's cast_adapter_dtype upcasts float16/bfloat16 (float32 stays float32)


# --- bytes ---------------------------------------------------------------------------------------


def lora_targets(model, targets) -> dict[str, tuple[int, int]]:
    """{module name: (in_features, out_features)} of the linears PEFT wraps for `targets`.

    PEFT's matching (`check_target_module_exists`): a list matches a name equal to an entry or
    ending in "." + entry; a string is a full regex match; "all-linear" is every linear layer but
    the output embedding. Raises ValueError when nothing matches (PEFT does too).
    """
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    model_type = model.config.model_type
    if targets is None:
        if model_type not in PEFT_DEFAULT_TARGETS:
            raise ValueError(
                f"DPOOptions.lora_target_modules=None is not accepted for model type {model_type!r}: PEFT has no "
                f"default there; accepted: explicit module names or 'all-linear' "
                f"(defaults exist for {sorted(PEFT_DEFAULT_TARGETS)})"
            )
        targets = PEFT_DEFAULT_TARGETS[model_type]
    output = model.get_output_embeddings()
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            shape = (module.in_features, module.out_features)
        elif isinstance(module, Conv1D):
            shape = (module.weight.shape[0], module.nf)
        else:
            continue
        if targets == "all-linear":
            hit = module is not output
        elif isinstance(targets, str):
            hit = re.fullmatch(targets, name) is not None
        else:
            hit = any(name == t or name.endswith("." + t) for t in targets)
        if hit:
            found[name] = shape
    if not found:
        raise ValueError(
            f"DPOOptions.lora_target_modules={targets!r} matches no linear layer of this {model_type!r} model; "
            "accepted: names of its linear modules or 'all-linear'"
        )
    return found


def adapter_parameters(model, adapter: AdapterPlan) -> int:
    """LoRA parameters: r * (in + out) per targeted linear (lora_A: in x r, lora_B: r x out, no bias)."""
    shapes = lora_targets(model, adapter.target_modules).values()
    return sum(adapter.r * (fan_in + fan_out) for fan_in, fan_out in shapes)


def bill(plan: DPOPlan, config) -> dict[str, int]:
    """Bytes per process once the trainer is constructed: policy, reference, adapter, total, peak.

    A reference freed after precomputing (FSDP) is billed: it is resident during construction.
    `peak_bytes` is PROVISIONAL: total + the largest single parameter in the load dtype.
    """
    import torch

    from .memory_model import load_dtype, meta_model, predict

    dtype = load_dtype(plan.spec, config)
    policy = predict(plan.spec, config)
    reference_bytes = 0
    if plan.reference is not None:
        # The reference's keywords equal the policy's (dtype defaulting to the policy's), quantization aside.
        reference_spec = plan.spec
        if "quantization_config" not in plan.reference.kwargs and plan.spec.quantization != "none":
            reference_spec = replace(plan.spec, load_in_4bit=False, load_in_8bit=False)
        reference_bytes = (
            policy.total_bytes if reference_spec == plan.spec else predict(reference_spec, config).total_bytes
        )
    model = meta_model(config, dtype)
    adapter_bytes = 0
    if plan.adapter is not None:
        adapter_dtype = dtype if plan.adapter.dtype is None else getattr(torch, plan.adapter.dtype)
        adapter_bytes = adapter_parameters(model, plan.adapter) * adapter_dtype.itemsize
    largest = max((p.numel() for p in model.parameters()), default=0) * dtype.itemsize
    total = policy.total_bytes + reference_bytes + adapter_bytes
    return {
        "policy_bytes": policy.total_bytes,
        "reference_bytes": reference_bytes,
        "adapter_bytes": adapter_bytes,
        "total_bytes": total,
        "peak_bytes": total + largest,
    }


# --- command line --------------------------------------------------------------------------------

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_bytes(text: str) -> int:
    """'80GiB', '80GB', '85899345920', '1.5 TiB' -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(
            f"--device-memory={text!r} is not accepted; accepted: a byte count like 80GiB, 80GB or 85899345920"
        )
    value = float(match.group(1)) * _UNITS[match.group(2).upper()]
    if value <= 0:
        raise ValueError(f"--device-memory={text!r} is not accepted; accepted: a positive size")
    return int(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m policyload.plan",
        description=f"Bytes TRL {TRL_RELEASE}'s DPO recipe loads, from config.json alone (meta device, offline).",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT_OR_CONFIG", help="a folder with config.json, or the file")
    parser.add_argument("--dtype", default="float32", help=f"one of {[d for d in DTYPES if d]} (TRL default float32)")
    parser.add_argument("--load-in-4bit", action="store_true")
    parser.add_argument("--load-in-8bit", action="store_true")
    parser.add_argument("--bnb-4bit-quant-type", default="nf4")
    parser.add_argument("--use-bnb-nested-quant", action="store_true")
    parser.add_argument("--use-peft", action="store_true")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lora-target-modules", nargs="+", default=None, help="module names, or all-linear")
    parser.add_argument("--precompute-ref-log-probs", action="store_true")
    parser.add_argument("--distributed-type", default="NO", help=f"one of {DISTRIBUTED_TYPES}")
    parser.add_argument("--device-memory", default=None, help="e.g. 80GiB, 80GB, 85899345920")
    parser.add_argument("--json", action="store_true", help="print the bill as JSON")
    return parser


def _config_path(text: str) -> Path:
    path = Path(text)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ValueError(f"{text}: no config.json there; accepted: a folder holding config.json, or a config.json file")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        config_file = _config_path(args.checkpoint)
        device_memory = None if args.device_memory is None else parse_bytes(args.device_memory)
        targets = args.lora_target_modules
        if targets == ["all-linear"]:
            targets = "all-linear"
        spec = LoadSpec(
            str(config_file.parent),
            dtype=args.dtype,
            load_in_4bit=args.load_in_4bit,
            load_in_8bit=args.load_in_8bit,
            bnb_4bit_quant_type=args.bnb_4bit_quant_type,
            use_bnb_nested_quant=args.use_bnb_nested_quant,
        )
        options = DPOOptions(
            use_peft=args.use_peft,
            precompute_ref_log_probs=args.precompute_ref_log_probs,
            distributed_type=args.distributed_type,
            lora_r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_target_modules=targets,
        )
        plan = plan_dpo_loads(spec, options, Topology("cuda"))
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(str(config_file))
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{config_file}: not a readable config.json ({type(error).__name__}: {error})") from error
        result = bill(plan, config)
    except ValueError as error:
        parser.error(str(error))
    result["fits"] = None if device_memory is None else result["peak_bytes"] <= device_memory
    if device_memory is not None:
        result["device_memory_bytes"] = device_memory
        result["margin_bytes"] = device_memory - result["peak_bytes"]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_table(plan, result))
    return 0


def _table(plan: DPOPlan, result: dict) -> str:
    gib = 2**30
    reference = plan.reference
    rows = [
        ("policy", result["policy_bytes"]),
        (
            "reference"
            + (" (freed after precompute)" if reference and reference.freed_after_precompute else "")
            + ("" if reference else " (none)"),
            result["reference_bytes"],
        ),
        ("adapter" + ("" if plan.adapter else " (none)"), result["adapter_bytes"]),
        ("total", result["total_bytes"]),
        ("peak (provisional)", result["peak_bytes"]),
    ]
    lines = [f"{'':<40} {'GiB':>9}"] + [f"{name:<40} {value / gib:>9.2f}" for name, value in rows]
    if result["fits"] is not None:
        verdict = "fits" if result["fits"] else "does NOT fit"
        lines.append(
            f"{verdict} in {result['device_memory_bytes'] / gib:.2f} GiB, margin {result['margin_bytes'] / gib:.2f} GiB"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
