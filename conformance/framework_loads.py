"""Other frameworks' own load paths, run and recorded: the recipe and DPO-plan levels for them.

A framework's loader (LlamaFactory's `load_model`, oumi's `build_model`, ...) is run unmodified on
a tiny checkpoint with `from_pretrained` intercepted (`dpo_recording.every_load`, or `first_load`
to stop at the first call). What it passed is then put in the form TRL's keywords are compared
in, unifying only spellings that `from_pretrained` provably reads as the same call (transformers
5.24 `modeling_utils.py` `PreTrainedModel.from_pretrained`; `test_framework_loads.py` holds the
installed release to each):

- `pretrained_model_name_or_path=` is the path: the positional argument, not a keyword;
- `torch_dtype` is `dtype`'s old name ("For BC on torch_dtype argument": `dtype = dtype if dtype
  is not None else torch_dtype`), unread when `dtype` is given too (axolotl passes both);
- `low_cpu_mem_usage` is popped unread ("Not used anymore -- remove them from the kwargs");
- `cache_dir=None`, `token=None`: the values `from_pretrained` takes when they are left out;
- `config=<a config object>` becomes what it changes: the entries of its `to_dict()` where it
  differs from the checkpoint's own config (`AutoConfig.from_pretrained(path)`, which TRL's call
  loads: it passes no `config`); its attention implementation becomes the `attn_implementation`
  keyword, which `from_pretrained` turns into exactly that (`config._attn_implementation =
  kwargs.pop("attn_implementation")`; None is the config's default).

Everything else is kept as passed, so a difference in what lands in memory or where shows.
"""

from __future__ import annotations

import contextlib

from .dpo_recording import Recorded, every_load, observed
from .upstream_patches import from_pretrained_replaced

#: Keywords whose value, when it is this one, is what `from_pretrained` takes without them.
DEFAULT_WHEN_LEFT_OUT = {"cache_dir": None, "token": None}
#: Keywords `from_pretrained` pops without reading (transformers 5.24).
UNREAD = ("low_cpu_mem_usage",)


def config_changes(config, path: str) -> dict:
    """What a `config=` object changes against the checkpoint's own config: {entry: value}."""
    from transformers import AutoConfig

    own = AutoConfig.from_pretrained(path)
    given, checkpoint = config.to_dict(), own.to_dict()
    changes = {key: value for key, value in given.items() if checkpoint.get(key, ...) != value}
    changes.pop("transformers_version", None)
    return changes


def unified_kwargs(kwargs: dict, path: str) -> dict:
    """A framework's `from_pretrained` keywords with the spellings listed in the module docstring
    unified; anything else as passed."""
    kwargs = dict(kwargs)
    if kwargs.get("pretrained_model_name_or_path") == path:
        del kwargs["pretrained_model_name_or_path"]
    if "torch_dtype" in kwargs and kwargs.get("dtype") is None:
        kwargs["dtype"] = kwargs.pop("torch_dtype")
    elif "torch_dtype" in kwargs:  # both given: dtype wins, torch_dtype is not read
        del kwargs["torch_dtype"]
    for key in UNREAD:
        kwargs.pop(key, None)
    for key, default in DEFAULT_WHEN_LEFT_OUT.items():
        if key in kwargs and kwargs[key] is default:
            del kwargs[key]
    if "config" in kwargs and not isinstance(kwargs["config"], str | type(None)):
        config = kwargs["config"]
        if "attn_implementation" not in kwargs:
            kwargs["attn_implementation"] = config._attn_implementation_internal
        changes = config_changes(config, path)
        if changes:
            kwargs["config"] = changes
        else:  # the checkpoint's own config, as TRL's call loads it
            del kwargs["config"]
    return kwargs


class _Stopped(Exception):
    def __init__(self, kwargs):
        super().__init__("from_pretrained reached")
        self.kwargs = kwargs


def first_load(run, path: str) -> dict:
    """Run `run()` (a framework's loader) up to its first outermost `from_pretrained`, which is
    not run: its keywords, unified. The recipe level: what the policy's load is asked for."""

    def stop(cls, *args, **kwargs):
        raise _Stopped(kwargs)

    with from_pretrained_replaced(stop):
        try:
            run()
        except _Stopped as stopped:
            return unified_kwargs(stopped.kwargs, path)
    raise AssertionError("the framework's loader returned without calling from_pretrained")


def _on_this_cpu(kwargs: dict) -> dict:
    kwargs.pop("device_map", None)
    return kwargs


@contextlib.contextmanager
def every_framework_load(simulated_accelerator: bool = False):
    """`every_load` for a framework's run: yields the list the loads are recorded in. With a
    simulated accelerator the loads are recorded as passed and run on this CPU (no device_map),
    as TRL's are in the same cases ("auto" resolves to the CPU)."""
    with every_load(_on_this_cpu if simulated_accelerator else None) as loads:
        yield loads


def loads_shape(loads: list[Recorded], policy, reference, path: str) -> dict:
    """A framework's DPO loads in the DPO-plan level's shared shape (`dpo_recording`): the policy
    first, then the reference; the adapter read off the policy as built; `freed_after_precompute`
    False (the frameworks here keep a reference they loaded)."""
    from types import SimpleNamespace

    unified = [
        Recorded(load.source, None if load.kwargs is None else unified_kwargs(load.kwargs, path)) for load in loads
    ]
    return observed(unified, SimpleNamespace(model=policy, ref_model=reference), policy_given=False)
