"""The reference's own contract: what `LoadSpec` and `Topology` accept, and how they say no."""

import re
from types import SimpleNamespace

import pytest

from policyload import LoadSpec, Topology, build_model_kwargs


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            {"dtype": "bf16"},
            "LoadSpec.dtype='bf16' is not accepted; accepted: (None, 'auto', 'bfloat16', 'float16', 'float32')",
        ),
        ({"dtype": "int8"}, "LoadSpec.dtype='int8' is not accepted"),
        (
            {"bnb_4bit_quant_type": "int4"},
            "LoadSpec.bnb_4bit_quant_type='int4' is not accepted; accepted: ('nf4', 'fp4')",
        ),
        (
            {"bnb_4bit_quant_storage": "bf16"},
            "LoadSpec.bnb_4bit_quant_storage='bf16' is not accepted; accepted: (None, 'uint8'",
        ),
        (
            {"load_in_4bit": True, "load_in_8bit": True},
            "load_in_4bit=True and LoadSpec.load_in_8bit=True are not accepted together",
        ),
        ({"load_in_4bit": True, "dtype": "auto"}, "LoadSpec.dtype='auto' is not accepted with load_in_4bit=True"),
        ({"model_name_or_path": ""}, "LoadSpec.model_name_or_path='' is not accepted; accepted: a non-empty string"),
        ({"load_in_8bit": "yes"}, "LoadSpec.load_in_8bit='yes' is not accepted; accepted: True or False"),
    ],
)
def test_bad_input_names_field_value_and_accepted_values(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        LoadSpec(**{"model_name_or_path": "model", **fields})


@pytest.mark.parametrize("dtype", [None, "auto"])
def test_auto_and_none_dtype_are_accepted_without_4bit(dtype):
    assert build_model_kwargs(LoadSpec("model", dtype=dtype, load_in_8bit=True), Topology(None))["dtype"] == dtype


def test_from_model_config_reads_old_and_new_field_names():
    old = SimpleNamespace(model_name_or_path="m", torch_dtype="bfloat16", trust_remote_code=True, load_in_4bit=True)
    new = SimpleNamespace(model_name_or_path="m", dtype="float16", bnb_4bit_quant_storage="uint8")
    assert (LoadSpec.from_model_config(old), LoadSpec.from_model_config(new, trust_remote_code=True)) == (
        LoadSpec("m", dtype="bfloat16", trust_remote_code=True, load_in_4bit=True),
        LoadSpec("m", dtype="float16", trust_remote_code=True, bnb_4bit_quant_storage="uint8"),
    )


def test_from_model_config_rejects_unknown_overrides():
    with pytest.raises(TypeError, match=r"unknown fields \['device_map'\]"):
        LoadSpec.from_model_config(SimpleNamespace(model_name_or_path="m"), device_map="auto")


def test_topology_rejects_unknown_accelerators_and_negative_ranks():
    accepted = r"Topology.accelerator='mps' is not accepted; accepted: \(None, 'cuda', 'xpu'\)"
    with pytest.raises(ValueError, match=accepted):
        Topology("mps")
    with pytest.raises(ValueError, match="Topology.local_process_index=-1 is not accepted"):
        Topology("cuda", -1)


def test_topology_detect_sees_this_process():
    """A plain (not torchrun) process is local process 0; torchrun ranks: conformance/test_distributed.py."""
    import torch

    xpu = hasattr(torch, "xpu") and torch.xpu.is_available()
    expected = "cuda" if torch.cuda.is_available() else ("xpu" if xpu else None)
    assert Topology.detect() == Topology(expected, 0)


@pytest.mark.parametrize(
    "topology, device",
    [
        (Topology(None), "cpu"), (Topology(None, 3), "cpu"),
        (Topology("cuda", 1), "cuda:1"), (Topology("xpu", 0), "xpu:0"),
    ],
)
def test_topology_device_is_the_torch_device_string(topology, device):
    assert topology.device == device


def test_from_model_config_overrides_win_over_the_config():
    # TRL >= 1.7 keeps trust_remote_code on DPOConfig while an older ModelConfig still has the field:
    # what the caller passes explicitly is what the recipe uses.
    cfg = SimpleNamespace(model_name_or_path="m", dtype="float32", trust_remote_code=False)
    spec = LoadSpec.from_model_config(cfg, trust_remote_code=True, dtype="bfloat16")
    assert (spec.trust_remote_code, spec.dtype, spec.model_name_or_path) == (True, "bfloat16", "m")
