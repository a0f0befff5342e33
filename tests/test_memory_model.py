"""The memory model against the published parameter counts, against real loaded models' layout, and
its host split and peak against hand-derived figures for the Qwen2-0.5B shape."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig

from fixtures.checkpoints import TINY_ARCHITECTURES, tiny_checkpoint
from fixtures.realsize import PUBLISHED_PARAMETERS, REALSIZE_ARCHITECTURES, realsize_config
from policyload import LoadSpec, load_policy
from policyload.cases import QUANTIZATION_PRESETS
from policyload.load import release_memory
from policyload.memory_model import (
    BYTES_PER_QUANTIZED_WEIGHT,
    checkpoint_layout,
    fit_problem,
    layout_tensor_bytes,
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
def test_layout_check_prediction_equals_tensor_bytes_of_the_loaded_model(architecture, quantization, dtype):
    spec = LoadSpec(str(tiny_checkpoint(architecture)), dtype=dtype, **QUANTIZATION_PRESETS[quantization])
    predicted = predict(spec, AutoConfig.from_pretrained(spec.model_name_or_path)).total_bytes

    model = load_policy(spec)
    measured = layout_tensor_bytes(model)
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


# Qwen2-0.5B, by hand: per layer q 896x896, k 128x896, v 128x896, o 896x896, gate/up 4864x896,
# down 896x4864 are quantized (14,909,440 weights, 12,672 output rows); the embedding (tied with
# lm_head, 151936x896), the q/k/v biases and the norms are not (136,206,208 parameters).
QWEN_QUANTIZED = 24 * 14_909_440
QWEN_UNQUANTIZED = 494_032_768 - QWEN_QUANTIZED
QWEN_SCB = 24 * 12_672 * 4
QWEN_LARGEST_LAYER = 4864 * 896


@pytest.fixture
def bf16_checkpoint(tmp_path):
    save_file({"w": torch.zeros(1000, dtype=torch.bfloat16)}, tmp_path / "model.safetensors")
    return tmp_path


def test_checkpoint_layout_reads_size_and_dtype_from_the_headers(bf16_checkpoint):
    size = (bf16_checkpoint / "model.safetensors").stat().st_size

    assert checkpoint_layout(bf16_checkpoint) == (size, torch.bfloat16, True)
    assert checkpoint_layout(tiny_checkpoint("llama"))[1:] == (torch.bfloat16, True)


def test_bf16_load_of_a_bf16_checkpoint_stays_file_backed_and_peaks_at_the_file(bf16_checkpoint):
    prediction = predict(LoadSpec("unused", dtype="bfloat16"), realsize_config("qwen2-0.5b"), bf16_checkpoint)
    size = (bf16_checkpoint / "model.safetensors").stat().st_size

    assert prediction.file_backed_bytes == 2 * 494_032_768
    assert prediction.anon_bytes == prediction.buffer_bytes
    assert prediction.transient_bytes == 0
    assert prediction.peak_bytes == size + prediction.buffer_bytes


@pytest.mark.parametrize(("dtype", "element"), [("float16", 2), ("float32", 4)])
def test_conversion_is_private_and_peaks_at_source_plus_destination(bf16_checkpoint, dtype, element):
    prediction = predict(LoadSpec("unused", dtype=dtype), realsize_config("qwen2-0.5b"), bf16_checkpoint)
    size = (bf16_checkpoint / "model.safetensors").stat().st_size

    assert prediction.file_backed_bytes == 0
    assert prediction.anon_bytes == element * 494_032_768 + prediction.buffer_bytes
    assert prediction.peak_bytes == size + prediction.anon_bytes


def test_8bit_keeps_the_embedding_file_backed_and_adds_one_fp32_layer_of_transient(bf16_checkpoint):
    spec = LoadSpec("unused", dtype="bfloat16", load_in_8bit=True)
    prediction = predict(spec, realsize_config("qwen2-0.5b"), bf16_checkpoint)
    size = (bf16_checkpoint / "model.safetensors").stat().st_size

    assert prediction.file_backed_bytes == 2 * QWEN_UNQUANTIZED
    assert prediction.anon_bytes == QWEN_QUANTIZED + QWEN_SCB + prediction.buffer_bytes
    assert prediction.transient_bytes == 4 * QWEN_LARGEST_LAYER
    assert prediction.peak_bytes == size + prediction.anon_bytes + 4 * QWEN_LARGEST_LAYER
    assert prediction.device_peak_bytes == prediction.total_bytes + 4 * QWEN_LARGEST_LAYER


def test_without_a_checkpoint_nothing_is_file_backed():
    prediction = predict(LoadSpec("unused", dtype="bfloat16"), realsize_config("qwen2-0.5b"))

    assert prediction.file_backed_bytes == prediction.checkpoint_bytes == 0
    assert prediction.peak_bytes == prediction.total_bytes
