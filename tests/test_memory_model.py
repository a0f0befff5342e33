"""The memory model against the published parameter counts and against real loaded models."""

from __future__ import annotations

import pytest
from transformers import AutoConfig

from fixtures.checkpoints import TINY_ARCHITECTURES, tiny_checkpoint
from fixtures.realsize import PUBLISHED_PARAMETERS, REALSIZE_ARCHITECTURES, realsize_config
from policyload import LoadSpec, load_policy
from policyload.cases import QUANTIZATION_PRESETS
from policyload.load import release_memory
from policyload.memory_model import (
    BYTES_PER_QUANTIZED_WEIGHT,
    fit_problem,
    measured_model_bytes,
    meta_model,
    parameter_count,
    predict,
    quantized_layer_bytes,
    quantized_linears,
)

#: Model cards: Qwen2-0.5B 494M, Llama-3.2-1B 1.24B, Llama-3.1-8B 8.03B.
ROUNDED_PARAMETERS = {"qwen2-0.5b": 494e6, "llama-3.2-1b": 1.24e9, "llama-3.1-8b": 8.03e9}


@pytest.mark.parametrize("name", REALSIZE_ARCHITECTURES)
def test_realsize_parameter_count_matches_published(name):
    count = parameter_count(realsize_config(name))

    assert abs(count / ROUNDED_PARAMETERS[name] - 1) < 0.005, f"{name}: {count:,} parameters"
    assert count == PUBLISHED_PARAMETERS[name]


@pytest.mark.parametrize("architecture", TINY_ARCHITECTURES)
@pytest.mark.parametrize("quantization", QUANTIZATION_PRESETS)
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_prediction_equals_bytes_of_the_loaded_model(architecture, quantization, dtype):
    spec = LoadSpec(str(tiny_checkpoint(architecture)), dtype=dtype, **QUANTIZATION_PRESETS[quantization])
    predicted = predict(spec, AutoConfig.from_pretrained(spec.model_name_or_path)).total_bytes

    model = load_policy(spec)
    measured = measured_model_bytes(model)
    del model
    release_memory()

    assert measured == predicted


def test_auto_dtype_follows_the_checkpoint():
    path = str(tiny_checkpoint("llama"))
    config = AutoConfig.from_pretrained(path)

    assert predict(LoadSpec(path, dtype="auto"), config) == predict(LoadSpec(path, dtype="bfloat16"), config)


@pytest.mark.parametrize("quantization", ["4bit", "4bit-nested", "8bit"])
def test_large_layers_approach_the_published_bytes_per_weight(quantization):
    weight_bytes, state_bytes = quantized_layer_bytes(14336, 4096, quantization)
    per_weight = (weight_bytes + (0 if quantization == "8bit" else state_bytes)) / (14336 * 4096)

    assert per_weight == pytest.approx(BYTES_PER_QUANTIZED_WEIGHT[quantization], rel=1e-4)


def test_lm_head_and_tied_embeddings_stay_unquantized():
    model = meta_model(realsize_config("qwen2-0.5b"))

    quantized = quantized_linears(model)

    assert not any(name.startswith(("lm_head", "model.embed_tokens")) for name in quantized)
    assert len(quantized) == 24 * 7  # q, k, v, o, gate, up, down per layer


def test_tied_embeddings_counted_once():
    config = realsize_config("qwen2-0.5b")
    prediction = predict(LoadSpec("unused", dtype="bfloat16"), config)

    assert prediction.parameters == PUBLISHED_PARAMETERS["qwen2-0.5b"]
    assert prediction.unquantized_parameter_bytes == 2 * PUBLISHED_PARAMETERS["qwen2-0.5b"]


def test_fit_problem_names_need_and_availability():
    assert fit_problem("available host memory", 1024**3, 2 * 1024**3) is None
    assert fit_problem("available host memory", 3 * 1024**3, 2 * 1024**3) == (
        "does not fit: needs 3.0 GiB of available host memory (memory model), 2.0 GiB available"
    )
