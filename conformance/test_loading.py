"""Level 4: `load_policy` on every tiny checkpoint for every dtype x quantization case.

Expectations come from the case and the checkpoint itself (its config.json), and the layers that
must be quantized are pinned by hand per architecture, never taken from the loaded model nor from
transformers' own rule (`get_keys_to_not_convert`), which the load applies: a change of that rule
then shows up here as a failure to look at, not as silent agreement.
"""

import json
from importlib.metadata import version

import bitsandbytes as bnb
import pytest
import torch
import transformers
from packaging.version import Version

from fixtures.checkpoints import TINY_ARCHITECTURES
from policyload import LoadSpec, load_policy
from policyload.cases import ConfigCase

from .cases import loading_cases

QUANTIZED_CLASS = {"4bit": bnb.nn.Linear4bit, "8bit": bnb.nn.Linear8bitLt}
#: transformers 5 made dtype=None mean "the checkpoint's dtype"; before, it meant float32, and
#: float16 for bitsandbytes loads (the bnb quantizer's `update_torch_dtype` in transformers 4.x).
NONE_MEANS_AUTO = Version(version("transformers")) >= Version("5")


def checkpoint_dtype(path) -> torch.dtype:
    config = json.loads((path / "config.json").read_text())
    return getattr(torch, config.get("dtype") or config["torch_dtype"])


def expected_dtype(case: ConfigCase, path) -> torch.dtype:
    if case.dtype == "auto" or (case.dtype is None and NONE_MEANS_AUTO):
        return checkpoint_dtype(path)
    if case.dtype is None:
        return torch.float32 if case.quantization == "none" else torch.float16
    return getattr(torch, case.dtype)


def decoder_layers(prefix: str, names: tuple[str, ...], layers: int = 2) -> frozenset:
    return frozenset(f"{prefix}.{layer}.{name}" for layer in range(layers) for name in names)


#: The layers bitsandbytes must replace in the tiny checkpoints (fixtures/checkpoints.py: 2 decoder
#: layers each), written from the architectures: every linear projection of attention and MLP
#: (GPT-2's are transformers' `Conv1D`); embeddings, norms and the output head stay as they are.
QUANTIZED_LAYERS = {
    "llama": decoder_layers(
        "model.layers",
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
        + ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    ),
    "qwen2": decoder_layers(
        "model.layers",
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
        + ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    ),
    "gpt2": decoder_layers("transformer.h", ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")),
}
#: The linear layers that must stay unquantized: the output head (transformers keeps it in full
#: precision so the logits are).
UNQUANTIZED_LINEARS = {"llama": {"lm_head"}, "qwen2": {"lm_head"}, "gpt2": {"lm_head"}}


def test_pinned_layers_are_every_projection_of_the_architecture():
    """The pins count what the architectures have: 7 projections per Llama/Qwen2 layer, 4 per GPT-2 layer."""
    assert {architecture: len(names) for architecture, names in QUANTIZED_LAYERS.items()} == {
        "llama": 2 * 7,
        "qwen2": 2 * 7,
        "gpt2": 2 * 4,
    }
    assert set(QUANTIZED_LAYERS) == set(UNQUANTIZED_LINEARS) == set(TINY_ARCHITECTURES)


@pytest.mark.parametrize("architecture, case", loading_cases())
def test_load_policy(architecture, case, tiny_checkpoints):
    path = tiny_checkpoints[architecture]
    if not case.valid:
        with pytest.raises(ValueError, match="LoadSpec.dtype='auto' is not accepted with load_in_4bit=True"):
            load_policy(LoadSpec(str(path), **case.model_config_fields()))
        return

    model = load_policy(LoadSpec(str(path), **case.model_config_fields()))

    assert model.dtype == expected_dtype(case, path)
    assert model.config._attn_implementation == "sdpa"  # transformers' default where no choice is made
    quantized = {name for name, module in model.named_modules() if isinstance(module, tuple(QUANTIZED_CLASS.values()))}
    if case.quantization == "none":
        assert quantized == set()
    else:
        assert quantized == QUANTIZED_LAYERS[architecture]
        assert {type(model.get_submodule(name)) for name in quantized} == {QUANTIZED_CLASS[case.quantization]}
    assert {type(model.get_submodule(name)) for name in UNQUANTIZED_LINEARS[architecture]} == {torch.nn.Linear}
    if case.quantization == "4bit":
        layer = model.get_submodule(sorted(quantized)[0])
        state = layer.weight.quant_state
        assert (state.quant_type, state.nested, layer.compute_dtype, layer.weight.dtype) == (
            case.quant_type,
            case.nested,
            getattr(torch, case.dtype or "float32"),
            getattr(torch, case.storage or "uint8"),
        )
    input_ids = torch.arange(8).unsqueeze(0)
    with torch.no_grad():
        logits = model(input_ids).logits
    assert logits.shape == (1, 8, model.config.vocab_size)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("architecture", TINY_ARCHITECTURES)
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("quantization", ["none", "4bit"])
def test_attention_implementation_is_applied(architecture, attn_implementation, quantization, tiny_checkpoints):
    spec = LoadSpec(
        str(tiny_checkpoints[architecture]), dtype="bfloat16", attn_implementation=attn_implementation,
        load_in_4bit=quantization == "4bit",
    )
    model = load_policy(spec)
    assert model.config._attn_implementation == attn_implementation


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("flash_attn") is not None, reason="requires flash-attn to be absent"
)
def test_flash_attention_2_without_flash_attn_fails_as_transformers_does(tiny_checkpoints):
    path = str(tiny_checkpoints["llama"])
    with pytest.raises(Exception) as transformers_error:
        transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="flash_attention_2")
    with pytest.raises(Exception) as policyload_error:
        load_policy(LoadSpec(path, attn_implementation="flash_attention_2"))
    assert (type(policyload_error.value), str(policyload_error.value)) == (
        type(transformers_error.value),
        str(transformers_error.value),
    )
