"""Which models TRL 1.16's DPOTrainer loads for a `LoadSpec` and `DPOOptions`, with which keywords.

Read from `trainer/dpo_trainer.py` (`DPOTrainer.__init__`), `trainer/utils.py`
(`create_model_from_path`) and `scripts/dpo.py`:

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

`Load.kwargs` are the keywords that reach `from_pretrained` (after `create_model_from_path`), keyed
as TRL passes them; a value the trainer reads off the policy instance is a `FromPolicy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..spec import LoadSpec
from ..topology import Topology
from .adapter import AdapterPlan, plan_adapter
from .options import TRL_RELEASE, DPOOptions, _reject

ROLES = ("policy", "reference")
#: "disk": `from_pretrained`; "instance": given by the caller; "copy": a deep copy (no 1.16 path).
SOURCES = ("disk", "instance", "copy")


@dataclass(frozen=True)
class FromPolicy:
    """A keyword value DPOTrainer reads off the loaded policy (`policy.<attribute>`)."""

    attribute: str

    def __repr__(self) -> str:
        return f"<policy.{self.attribute}>"


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
class DPOPlan:
    """Everything DPOTrainer holds once constructed: its loads (policy first) and its adapter."""

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


def plan_dpo_loads(spec: LoadSpec, options: DPOOptions | None = None, topology: Topology | None = None) -> DPOPlan:
    """Every model TRL 1.16's DPOTrainer holds for `spec` and `options`, with its keywords.

    `topology` (default: this process's) decides `create_model_from_path`'s device_map default.
    Raises ValueError for combinations TRL or transformers' Trainer refuse.
    """
    from ..kwargs import build_quantization_config

    options = options or DPOOptions()
    if spec.quantization != "none" and not options.use_peft:
        # transformers Trainer._validate_model: "You cannot perform fine-tuning on purely quantized models."
        raise ValueError(
            f"LoadSpec.load_in_{spec.quantization}=True is not accepted with DPOOptions.use_peft=False: "
            "transformers' Trainer refuses to fine-tune a purely quantized model; accepted: use_peft=True "
            "or no quantization"
        )
    topology = topology or Topology.detect()
    quantization_config = None if options.policy_as_instance else build_quantization_config(spec)

    if options.policy_as_instance:
        policy = Load("policy", "instance", None)
        model_init_kwargs: dict = {}  # DPOConfig.model_init_kwargs=None; ignored for an instance anyway
    else:
        model_init_kwargs = _recipe_model_init_kwargs(spec)
        kwargs = _trainer_kwargs(model_init_kwargs, quantization_config, spec, options)
        policy = Load("policy", "disk", _from_pretrained_kwargs(kwargs, topology))

    loads = [policy]
    fsdp = options.distributed_type == "FSDP"
    # dpo_trainer.py: if is_peft_model(self.model) or (args.precompute_ref_log_probs and not self.is_fsdp_enabled)
    if not (options.use_peft or (options.precompute_ref_log_probs and not fsdp)):
        kwargs = _trainer_kwargs(model_init_kwargs, quantization_config, spec, options)
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
    return DPOPlan(spec, options, tuple(loads), plan_adapter(spec, options))


def _recipe_model_init_kwargs(spec: LoadSpec) -> dict:
    # scripts/dpo.py: dict(revision=..., trust_remote_code=..., attn_implementation=..., dtype=model_args.dtype)
    return {
        "revision": spec.model_revision,
        "trust_remote_code": spec.trust_remote_code,
        "attn_implementation": spec.attn_implementation,
        "dtype": spec.dtype,
    }


def _trainer_kwargs(model_init_kwargs: dict, quantization_config, spec: LoadSpec, options: DPOOptions) -> dict:
    """What DPOTrainer adds to a copy of `model_init_kwargs`, the same steps for policy and reference."""
    kwargs = dict(model_init_kwargs)
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if options.distributed_type in ("MULTI_GPU", "DEEPSPEED"):  # dpo_trainer.py: if ... distributed_type in [...]
        kwargs["device_map"] = None
    kwargs.setdefault("trust_remote_code", spec.trust_remote_code)
    return kwargs


def _from_pretrained_kwargs(kwargs: dict, topology: Topology) -> dict:
    """`create_model_from_path`'s own steps: dtype name -> torch dtype, device_map default."""
    from ..kwargs import torch_dtype_argument

    kwargs = dict(kwargs)
    if isinstance(kwargs.get("dtype"), str):
        kwargs["dtype"] = torch_dtype_argument(kwargs["dtype"])
    elif "dtype" not in kwargs:
        kwargs["dtype"] = torch_dtype_argument("float32")
    if "device_map" not in kwargs:
        # create_model_from_path: `None if PartialState().device.type in ("cpu", "mps") else "auto"`
        kwargs["device_map"] = None if topology.accelerator is None else "auto"
    return kwargs


def _policy_dtype(spec: LoadSpec):
    """`self.model.dtype` for an instance loaded as `spec` says: known unless the checkpoint decides."""
    import torch

    return FromPolicy("dtype") if spec.dtype in (None, "auto") else getattr(torch, spec.dtype)
