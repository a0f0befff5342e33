"""The unifications `framework_loads` makes to other frameworks' `from_pretrained` keywords hold in
the installed transformers, and nothing else is unified; the recorder takes a path passed by name."""

import inspect

import pytest
import torch
import transformers

from .dpo_recording import Recorded, every_load
from .framework_loads import first_load, loads_shape, unified_kwargs


def test_each_unified_spelling_is_the_same_call_in_transformers():
    """The source lines `framework_loads`' docstring cites, in the installed `from_pretrained`."""
    source = inspect.getsource(transformers.PreTrainedModel.from_pretrained)
    assert 'torch_dtype = kwargs.pop("torch_dtype", None)' in source
    assert "dtype = dtype if dtype is not None else torch_dtype" in source
    # The block of keywords popped unread ends at the first blank line (a loop over names in 5.x, one
    # pop per line in 4.57: the order and spelling differ by release).
    assert '"low_cpu_mem_usage"' in source.split("Not used anymore")[1].split("\n\n")[0]
    assert 'config._attn_implementation = kwargs.pop("attn_implementation")' in source
    parameters = inspect.signature(transformers.PreTrainedModel.from_pretrained).parameters
    assert parameters["cache_dir"].default is None and parameters["token"].default is None


def test_unified_keywords(tiny_checkpoints):
    path = str(tiny_checkpoints["llama"])
    config = transformers.AutoConfig.from_pretrained(path)
    config.use_cache = False
    config._attn_implementation = "eager"
    passed = {
        "pretrained_model_name_or_path": path,
        "torch_dtype": "auto",
        "low_cpu_mem_usage": True,
        "cache_dir": None,
        "token": None,
        "config": config,
        "revision": "main",
        "device_map": {"": torch.device("cpu")},
    }
    assert unified_kwargs(passed, path) == {
        "dtype": "auto",
        "attn_implementation": "eager",
        "config": {"use_cache": False},
        "revision": "main",
        "device_map": {"": torch.device("cpu")},
    }
    # Not the same call, so kept: another path, a cache folder.
    other = {"pretrained_model_name_or_path": "elsewhere", "cache_dir": "/c"}
    assert unified_kwargs(other, path) == other
    # Both dtype spellings: dtype is read, torch_dtype not.
    assert unified_kwargs({"dtype": torch.float32, "torch_dtype": torch.float16}, path) == {"dtype": torch.float32}
    # A config that changes nothing is the checkpoint's own: left out, its attention kept.
    same = transformers.AutoConfig.from_pretrained(path)
    assert unified_kwargs({"config": same}, path) == {"attn_implementation": None}


def test_recorder_takes_the_path_by_name_and_stops_at_the_first_load(tiny_checkpoints):
    path = str(tiny_checkpoints["llama"])
    with every_load() as loads:
        transformers.AutoModelForCausalLM.from_pretrained(pretrained_model_name_or_path=path, dtype=torch.float32)
    assert loads == [Recorded("disk", {"pretrained_model_name_or_path": path, "dtype": torch.float32})]

    def two_loads():
        transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
        transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float16)

    assert first_load(two_loads, path) == {"dtype": torch.bfloat16}
    with pytest.raises(AssertionError, match="without calling from_pretrained"):
        first_load(lambda: None, path)


def test_loads_shape_names_the_roles_and_keeps_a_reference(tiny_checkpoints):
    path = str(tiny_checkpoints["llama"])
    loads = [Recorded("disk", {"torch_dtype": "auto"}), Recorded("disk", {"torch_dtype": "auto"})]
    policy = transformers.AutoModelForCausalLM.from_pretrained(path)
    assert loads_shape(loads, policy, policy, path) == {
        "policy": {"source": "disk", "kwargs": {"dtype": "auto"}},
        "reference": {"source": "disk", "kwargs": {"dtype": "auto"}, "freed_after_precompute": False},
    }
