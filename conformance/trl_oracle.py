"""Run TRL's own code and observe what it does; never a re-typed copy of it.

Everything that depends on the TRL release goes through `trl_release.FACTS`.
"""

from __future__ import annotations

import torch
import transformers

from policyload import Topology

from .agreement import Config
from .trl_release import FACTS
from .upstream_patches import from_pretrained_replaced, simulated_topology, trl_device_decider


def model_config(path: str, **fields):
    """A TRL `ModelConfig` for `fields` (LoadSpec names), spelled the way the installed release wants."""
    from trl import ModelConfig

    fields = dict(fields)
    if FACTS.dtype_field != "dtype" and "dtype" in fields:
        fields[FACTS.dtype_field] = fields.pop("dtype")
    if FACTS.trust_remote_code_on != "ModelConfig":
        fields.pop("trust_remote_code", None)
    if FACTS.quant_storage_follows_dtype:  # no bnb_4bit_quant_storage field before TRL 0.26
        fields.pop("bnb_4bit_quant_storage", None)
    return ModelConfig(model_name_or_path=path, **fields)


def comparable_kwargs(kwargs: dict) -> dict:
    """`from_pretrained` keywords as a comparable dict, keeping every distinction the call makes.

    Dropped is only what is provably the same call: `device_map=None` is the keyword left out
    (`PreTrainedModel.from_pretrained` reads it as `kwargs.pop("device_map", None)` and the auto
    classes pass it through untouched; `test_recipe.py` checks both in the installed transformers).
    `quantization_config=None` is kept: the auto class hands a None on to the checkpoint's config,
    where it would replace a pre-quantized checkpoint's own. A `BitsAndBytesConfig` becomes a
    `Config` (its `to_dict()`, which is lossless: its constructor turns every dtype it is given
    into a `torch.dtype`, and keeps the class); a `torch.dtype` stays a `torch.dtype`, so that
    `dtype="bfloat16"` does not pass for `dtype=torch.bfloat16`.
    """
    comparable = {}
    for key, value in kwargs.items():
        if key == "device_map" and value is None:
            continue
        if isinstance(value, transformers.BitsAndBytesConfig):
            value = Config(type(value).__name__, value.to_dict())
        comparable[key] = value
    return comparable


def observation_json(value):
    """A comparable value as the drift report's observation files spell it (a dtype by its name)."""
    if isinstance(value, dict):
        return {key: observation_json(item) for key, item in value.items()}
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    return value


def quantization_config_dict(config) -> dict | None:
    """A config as its `to_dict()`; a dict is taken as one already (alignment-handbook returns it so)."""
    return None if config is None else config if isinstance(config, dict) else config.to_dict()


class _Captured(Exception):
    """Raised by the intercepted `from_pretrained` to stop TRL before any weights are read."""

    def __init__(self, path, kwargs):
        super().__init__(path)
        self.path, self.kwargs = path, kwargs


def _record(cls, path, *args, **kwargs):
    raise _Captured(path, kwargs)


def capture_from_pretrained(run) -> tuple[str, dict]:
    """Run `run()` (TRL code) with `from_pretrained` intercepted; return (path, kwargs) it passed."""
    with from_pretrained_replaced(_record):  # raises `_Captured` at the first (outermost) call
        try:
            run()
        except _Captured as captured:
            return captured.path, captured.kwargs
    raise AssertionError("TRL's code returned without calling from_pretrained")


def trainer_device_map(path: str, topology: Topology) -> dict | str | None:
    """The `device_map` TRL >= 1.8's trainer path (`create_model_from_path`) picks for `topology`."""
    from trl.trainer.utils import create_model_from_path

    with simulated_topology(topology, create_model_from_path):
        _, kwargs = capture_from_pretrained(lambda: create_model_from_path(path, dtype="float32"))
    return kwargs.get("device_map")


def recipe_kwargs(
    path: str,
    fields: dict,
    dataset_dir,
    output_dir,
    topology: Topology | None = None,
    model_config_object=None,
    raw: bool = False,
) -> dict:
    """The keywords TRL's own DPO entry point (`trl.scripts.dpo.main`) passes to `from_pretrained`
    for a `ModelConfig` made of `fields`, captured by interception, made comparable.

    `model_config_object`, when given, is used as the `ModelConfig` instead of one made of `fields`;
    `raw=True` returns the keywords as passed, not made comparable.
    With `topology`, TRL's device decision (`get_kbit_device_map`, or `create_model_from_path`
    from 1.8) sees that topology instead of this machine's.
    """
    from trl import DatasetMixtureConfig, DPOConfig, ScriptArguments
    from trl.scripts import dpo

    fields = dict(fields)
    trust_remote_code = fields.get("trust_remote_code", False)
    training_fields = {"trust_remote_code": trust_remote_code} if FACTS.trust_remote_code_on == "DPOConfig" else {}
    # bf16=False: training precision does not reach from_pretrained, and bf16 training fails on CPU.
    training_args = DPOConfig(output_dir=str(output_dir), report_to="none", bf16=False, **training_fields)
    script_args = ScriptArguments(dataset_name=str(dataset_dir))
    model_args = model_config_object or model_config(path, **fields)
    arguments = (script_args, training_args, model_args, DatasetMixtureConfig())
    device_deciders = [trl_device_decider()] if topology is not None else []
    with simulated_topology(topology or Topology(None), *device_deciders):
        _, kwargs = capture_from_pretrained(lambda: dpo.main(*arguments))
    return kwargs if raw else comparable_kwargs(kwargs)


def reference_spec(path: str, fields: dict):
    """The `LoadSpec` a user of the installed TRL gets: `LoadSpec.from_model_config` of the same
    `ModelConfig` TRL reads (so release defaults such as dtype="float32" from 0.27 carry over),
    with `trust_remote_code` from the training config where TRL >= 1.7 keeps it."""
    from policyload import LoadSpec

    config = model_config(path, **fields)
    overrides = {}
    if not hasattr(config, "trust_remote_code"):
        overrides["trust_remote_code"] = fields.get("trust_remote_code", False)
    return LoadSpec.from_model_config(config, **overrides)
