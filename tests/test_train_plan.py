"""The plan of one DPO training step (`policyload.plan.step`), pinned by hand.

Every expected figure is arithmetic written out below from the shapes of a small Llama config
(hidden 64, 2 layers, 4 heads, 2 KV heads of 16, intermediate 128, vocab 1000, untied head; batch 2,
length 16: 4 rows, 64 tokens, 60 scored positions), not read from the code under test. The layer
arithmetic is also held to what torch itself saves for backward (saved-tensor hooks on the tiny
model: a bookkeeping check of the derivation, not a memory measurement). Planted faults (a
component dropped, a logits copy forgotten, checkpointing ignored, a saved tensor dropped) are kept
as tests that patch the fault in and see the checks fail.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import replace

import pytest
import torch

from fixtures.checkpoints import make_config
from fixtures.realsize import realsize_config
from fixtures.remote_code import MARKER_ENV, remote_code_checkpoint
from policyload import LoadSpec
from policyload.plan import COMPONENTS, PHASES, DPOOptions, TrainOptions, main, plan_training_step
from policyload.plan import page as page_module
from policyload.plan import step as step_module
from policyload.plan.step import Shape, layer_saved_bytes_per_token, lora_saved_bytes_per_token, weight_casts_bytes

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
SMALL = dict(
    vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
)  # fmt: skip
HAND = TrainOptions(per_device_train_batch_size=2, max_length=16, gradient_checkpointing=False, bf16=False)
TOKENS, SCORED = 4 * 16, 4 * 15
# Parameters: embed 1000*64, per layer q 64*64 + k 64*32 + v 64*32 + o 64*64 + gate/up/down 3*64*128 + 2 norms 64,
# final norm 64, lm_head 1000*64; 21 tensors.
LAYER_PARAMETERS = 4096 + 2048 + 2048 + 4096 + 3 * 8192 + 2 * 64
PARAMETERS = 64000 + 2 * LAYER_PARAMETERS + 64 + 64000
# Per token per layer, float32 without autocast, SDPA: two norms (fp32 input 4h, rsqrt 4, product 4h),
# q/k/v's shared input 4h, gate/up's 4h, SDPA's q, k, v (4 * (64 + 32 + 32)), output 4*64, logsumexp 4*4,
# MLP gate, SiLU out, up, product 4 * 4 * 128.
LAYER_PER_TOKEN = 2 * (4 * 64 + 4 + 4 * 64) + 4 * 64 + 4 * 64 + 4 * 128 + 4 * 64 + 4 * 4 + 4 * 4 * 128


def small_config(**overrides):
    return make_config("LlamaConfig", **{**SMALL, **overrides})


def plan(train=HAND, dtype="float32", attn=None, **options):
    spec = LoadSpec("c", dtype=dtype, attn_implementation=attn)
    return step_module.plan_training_step(spec, DPOOptions(**options), train, small_config())


def assert_hand_components(planned):
    """The hand arithmetic of the full fine-tune, float32, no checkpointing, SDPA, CUDA."""
    __tracebackhide__ = True
    activations = (
        2 * TOKENS * LAYER_PER_TOKEN  # both layers' saved tensors
        + 2 * 16 * 16 * 4  # rotary cos and sin, [1, 16, 16] fp32
        + TOKENS * (4 * 64 + 4 + 4 * 64)  # the final norm
        + SCORED * 64 * 4 + 2 * 4 * SCORED  # the head's hidden copy, log_z, entropy
    )
    expected = {
        "gradients": PARAMETERS * 4,
        "optimizer_state": 2 * PARAMETERS * 4 + 21 * 4,  # exp_avg, exp_avg_sq, a 4-byte step per tensor
        "activations": activations,
        # tile buffer [60, 32768] fp32 + fp32 grad of the hidden [60, 64] + fp32 grad of the head [1000, 64]
        "logits": 60 * 32768 * 4 + 4 * SCORED * 64 + 4 * 1000 * 64,
    }
    assert {name: planned.components[name] for name in expected} == expected


def test_components_by_hand():
    planned = plan()
    assert_hand_components(planned)
    assert set(planned.components) == set(COMPONENTS) and set(planned.phases) == set(PHASES)
    assert planned.components["reference"] == planned.components["policy"] > 0
    assert planned.peak_bytes == max(planned.phases.values())


def test_phases_by_hand():
    planned = plan()
    c = planned.components
    resident = c["policy"] + c["reference"] + c["adapter"] + c["optimizer_state"]
    assert planned.phases["optimizer_step"] == resident + c["gradients"]  # fused AdamW: in place
    assert planned.phases["backward"] >= resident + c["activations"] + c["logits"]
    assert planned.phases["reference_forward"] == resident + c["activations"] + c["reference_forward"]


# --- each option changes the right term ------------------------------------------------------


def test_checkpointing_keeps_only_layer_inputs():
    on, off = plan(replace(HAND, gradient_checkpointing=True)), plan()
    # each layer keeps its fp32 input [64 tokens, 64] instead of its saved set
    saved_set, layer_input = TOKENS * LAYER_PER_TOKEN, TOKENS * 64 * 4
    assert off.components["activations"] - on.components["activations"] == 2 * (saved_set - layer_input)
    assert {name for name in COMPONENTS if on.components[name] != off.components[name]} == {"activations"}


def test_eager_attention_adds_the_scores():
    eager, sdpa = plan(attn="eager"), plan()
    # per layer: fp32 softmax [4 rows, 4 heads, 16, 16] (no cast copy at fp32), plus per token q, repeated k
    # and v and o_proj's input (4 * 4 * 64) instead of SDPA's q, k, v, output, logsumexp (4*128 + 4*64 + 16)
    per_layer = 4 * 4 * 16 * 16 * 4 + TOKENS * (4 * 4 * 64 - (4 * 128 + 4 * 64 + 16))
    assert eager.components["activations"] - sdpa.components["activations"] == 2 * per_layer


def test_adamw_8bit_state_is_bitsandbytes_layout():
    state = plan(replace(HAND, optim="adamw_8bit")).components["optimizer_state"]
    # uint8 moments + fp32 absmax per 256 block for tensors >= 4096 elements; fp32 moments below that and for
    # the embedding (transformers registers nn.Embedding with optim_bits=32); two 256-entry fp32 qmaps.
    blockwise = lambda n: 2 * n + 2 * 4 * -(-n // 256)  # noqa: E731
    layer = blockwise(4096) + 8 * 2048 + 8 * 2048 + blockwise(4096) + 3 * blockwise(8192) + 2 * 8 * 64
    expected = 8 * 64000 + blockwise(64000) + 2 * layer + 8 * 64 + 2 * 256 * 4
    assert state == expected
    assert state < plan().components["optimizer_state"] / 1.9


def test_adamw_8bit_is_about_a_quarter_of_adamw_on_an_untied_8b():
    config = realsize_config("llama-3.1-8b")
    spec = LoadSpec("c", dtype="float32")
    fused = plan_training_step(spec, DPOOptions(), TrainOptions(), config).components["optimizer_state"]
    eight = plan_training_step(spec, DPOOptions(), TrainOptions(optim="adamw_8bit"), config).components
    # 8 B/param against 2 + 8/256 B/param, the 525M-parameter embedding kept at 8 B/param
    assert 0.25 < eight["optimizer_state"] / fused < 0.32


def test_peft_trains_only_the_adapter_and_loads_no_reference():
    peft = plan(use_peft=True)
    # LoRA r=16 on q (64 -> 64) and v (64 -> 32), both layers, fp32: 16 * (128 + 96) * 2 parameters
    adapter = 16 * (128 + 96) * 2
    assert peft.components["reference"] == 0
    assert peft.components["gradients"] == adapter * 4
    assert peft.components["optimizer_state"] == 2 * adapter * 4 + 8 * 4  # 8 tensors: lora_A, lora_B x 4
    assert peft.components["activations"] < plan().components["activations"]


def test_precompute_has_no_reference_forward():
    planned = plan(precompute_ref_log_probs=True)
    assert planned.components["reference"] == 0 and planned.components["reference_forward"] == 0
    assert planned.phases["reference_forward"] == 0


def test_cpu_fold_adds_the_tile_temporaries():
    cuda, cpu = plan(), plan(replace(HAND, device="cpu"))
    # _backward_tile: seven fp32 [60, 1000] tiles and one boolean
    assert cpu.components["logits"] - cuda.components["logits"] == 7 * 60 * 1000 * 4 + 60 * 1000


def test_bf16_autocast_over_float32_saves_weight_casts():
    shape = Shape.from_config(small_config())
    # q, o 64x64; k, v 64x32; gate, up, down 64x128; bf16
    assert weight_casts_bytes(shape, 2) == 2 * (2 * 4096 + 2 * 2048 + 3 * 8192)


@pytest.mark.parametrize("field, value", [("per_device_train_batch_size", 0), ("max_length", 0), ("optim", "sgd")])
def test_bad_train_options_name_field_value_and_accepted(field, value):
    with pytest.raises(ValueError, match=f"TrainOptions.{field}={value!r} is not accepted; accepted: "):
        TrainOptions(**{field: value})


def test_defaults_are_dpoconfig_1_16s():
    from trl import DPOConfig

    args = DPOConfig(output_dir="unused", report_to="none", use_cpu=True)  # use_cpu: bf16 without a GPU
    ours = TrainOptions()
    assert (ours.per_device_train_batch_size, ours.max_length, ours.gradient_checkpointing, ours.bf16, ours.fp16) == (
        args.per_device_train_batch_size, args.max_length, args.gradient_checkpointing, args.bf16, args.fp16,
    )  # fmt: skip
    assert ours.optim == str(args.optim.value)


def test_unplanned_architecture_is_refused():
    config = make_config("GPT2Config", vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=128)
    refusal = r"model_type='gpt2' \(GPT2Model\) is not accepted.*accepted: models whose decoder layers are"
    with pytest.raises(ValueError, match=refusal):
        plan_training_step(LoadSpec("c", dtype="float32"), DPOOptions(), TrainOptions(), config)


# --- the layer arithmetic against what torch saves -------------------------------------------


def saved_by_second_layer(model, ids, autocast: bool) -> int:
    """Bytes of the distinct storages the second decoder layer saves for backward, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen, marks = {}, {}

    def pack(tensor):
        if tensor.untyped_storage().data_ptr() not in params:
            seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    layer = model.get_decoder().layers[1]
    layer.register_forward_pre_hook(lambda *_: marks.__setitem__("start", dict(seen)))
    layer.register_forward_hook(lambda *_: marks.__setitem__("end", dict(seen)))
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), context:
        model(input_ids=ids)
    return sum(size for ptr, size in marks["end"].items() if ptr not in marks["start"])


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("load, autocast", [("float32", False), ("float32", True), ("bfloat16", False)])
def test_layer_arithmetic_is_what_torch_saves(load, autocast, attn):
    from transformers import AutoModelForCausalLM

    config = small_config()
    config._attn_implementation = attn
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(getattr(torch, load)).train()
    ids = torch.randint(0, 1000, (4, 16))
    compute, residual = step_module._dtypes(load, replace(HAND, bf16=autocast))
    shape = Shape.from_config(config)
    planned = step_module.layer_saved_bytes_per_token(shape, compute, residual, attn) * TOKENS
    planned += weight_casts_bytes(shape, compute) if compute < getattr(torch, load).itemsize else 0
    if attn == "eager":
        planned += step_module.attention_scores_bytes(shape, 4, 16, compute)
    assert planned == saved_by_second_layer(model, ids, autocast)


@pytest.mark.parametrize("load, autocast", [("float32", False), ("float32", True), ("bfloat16", True)])
def test_lora_layer_arithmetic_is_what_torch_saves(load, autocast):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import disable_dropout_in_model

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(small_config()).to(getattr(torch, load))
    # fp32 adapter (PEFT's autocast_adapter_dtype), dropout 0.05 as TRL's ModelConfig, then set to 0 as
    # DPOTrainer does (disable_dropout=True); the second layer's input requires grad (layer 0's adapters)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"]))
    disable_dropout_in_model(model)
    model.train()
    compute, residual = step_module._dtypes(load, replace(HAND, bf16=autocast))
    shape = Shape.from_config(small_config())
    targets = {"q_proj": (64, 64), "v_proj": (64, 32)}
    planned = TOKENS * (
        layer_saved_bytes_per_token(shape, compute, residual, "sdpa", frozen_base=True)
        + lora_saved_bytes_per_token(targets, 8, 4, compute, autocast, residual)
    )
    planned += weight_casts_bytes(shape, compute) if compute < getattr(torch, load).itemsize else 0
    planned += step_module.lora_weight_casts_bytes(targets, 8, 4, compute, autocast)
    assert planned == saved_by_second_layer(model.base_model.model, torch.randint(0, 1000, (4, 16)), autocast)


def test_lora_saves_no_dropout_mask_by_hand():
    # q (64 -> 64) and v (64 -> 32), r=8, fp32 adapter under bf16 autocast: lora_A's input is a bf16 cast
    # of x (2 B x 64 each) and lora_B's the bf16 r-vector (2 B x 8 each); DPOTrainer's p=0 dropout saves
    # nothing (an fp32 noise tensor, 4 B x 64 each, when p > 0)
    targets = {"q_proj": (64, 64), "v_proj": (64, 32)}
    assert lora_saved_bytes_per_token(targets, 8, 4, 2, True, 2) == (2 * 64 + 2 * 8) + (2 * 64 + 2 * 8)
    # float32 without autocast: no cast, q and v's lora_A save the one fp32 normalized input (4 B x 64)
    assert lora_saved_bytes_per_token(targets, 8, 4, 4, False, 4) == 4 * 64 + 2 * (4 * 8)


@pytest.mark.parametrize("quantization", ["load_in_4bit", "load_in_8bit"])
def test_qlora_layer_arithmetic_is_what_torch_saves(tmp_path, quantization):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    from trl.trainer.utils import disable_dropout_in_model

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(small_config()).save_pretrained(tmp_path)
    bnb = BitsAndBytesConfig(**{quantization: True}, bnb_4bit_compute_dtype=torch.bfloat16)
    base = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=bnb, dtype=torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"]))
    for parameter in model.parameters():
        if parameter.requires_grad:  # dpo_trainer.py: a quantized model's trainable parameters cast to bfloat16
            parameter.data = parameter.data.to(torch.bfloat16)
    disable_dropout_in_model(model)  # DPOTrainer, disable_dropout=True
    model.train()
    shape = Shape.from_config(small_config())
    targets = {"q_proj": (64, 64), "v_proj": (64, 32)}
    # bf16 residual and compute: the frozen (quantized) linears save no input and no dequantized weight
    planned = TOKENS * (
        layer_saved_bytes_per_token(shape, 2, 2, "sdpa", frozen_base=True)
        + lora_saved_bytes_per_token(targets, 8, 2, 2, True, 2)
    )
    assert planned == saved_by_second_layer(model.base_model.model, torch.randint(0, 1000, (4, 16)), True)


# --- planted faults, seen failing -------------------------------------------------------------


def test_planted_fault_component_dropped_is_caught(monkeypatch):
    monkeypatch.setattr(step_module, "_optimizer_state", lambda optim, trainable: 0)
    with pytest.raises(AssertionError):
        assert_hand_components(plan())


def test_planted_fault_logits_copy_forgotten_is_caught(monkeypatch):
    original = step_module.fused_head_bytes

    def without_weight_gradient(shape, *args, **kwargs):
        forward, backward = original(shape, *args, **kwargs)
        return forward, backward - 4 * shape.vocab * shape.hidden

    monkeypatch.setattr(step_module, "fused_head_bytes", without_weight_gradient)
    with pytest.raises(AssertionError):
        assert_hand_components(plan())


def test_planted_fault_checkpointing_ignored_is_caught(monkeypatch):
    original = step_module.plan_training_step

    def ignoring_checkpointing(spec, options, train, config, **kwargs):
        return original(spec, options, replace(train, gradient_checkpointing=False), config, **kwargs)

    monkeypatch.setattr(step_module, "plan_training_step", ignoring_checkpointing)
    with pytest.raises(AssertionError):
        test_checkpointing_keeps_only_layer_inputs()


def test_planted_fault_saved_tensor_dropped_is_caught(monkeypatch):
    original = step_module.layer_saved_bytes_per_token
    monkeypatch.setattr(
        step_module,
        "layer_saved_bytes_per_token",
        lambda shape, *args, **kwargs: original(shape, *args, **kwargs) - 4 * shape.heads,  # no logsumexp
    )
    with pytest.raises(AssertionError):
        test_layer_arithmetic_is_what_torch_saves("float32", False, "sdpa")


# --- peers --------------------------------------------------------------------------------------


def test_korthikanti_formula_by_hand():
    from policyload.estimators import korthikanti_bytes

    # s b h (34 + 5 a s / h) per layer: 16 * 4 * 64 * (34 + 5 * 4 * 16 / 64) = 4096 * 39, two layers; 16 B/param
    assert korthikanti_bytes(small_config(), HAND, PARAMETERS) == 16 * PARAMETERS + 2 * 4096 * 39
    # full recomputation: 2 s b h per layer
    ckpt = replace(HAND, gradient_checkpointing=True)
    assert korthikanti_bytes(small_config(), ckpt, PARAMETERS) == 16 * PARAMETERS + 2 * 2 * 16 * 4 * 64


def test_accelerate_training_estimate_is_its_own_arithmetic():
    from policyload.estimators import accelerate_training_bytes

    fp32 = LoadSpec("c", dtype="float32")
    # estimate_training_usage: float32 -> step = 4 x the fp32 size; mixed precision -> optimizer = 2 x
    assert accelerate_training_bytes(fp32, HAND, 1000) == 4000
    assert accelerate_training_bytes(fp32, TrainOptions(), 1000) == 2000
    assert accelerate_training_bytes(LoadSpec("c", dtype="bfloat16", load_in_4bit=True), HAND, 1000) is None


def test_deepspeed_model_states_or_the_reason_it_cannot_say():
    from policyload.estimators import deepspeed_model_states_bytes

    estimate, reason = deepspeed_model_states_bytes(1000, 100, stage=2)
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        assert estimate is None and "deepspeed is not installed" in reason
    else:
        assert (estimate, reason) == (4 * 1000 + 16 * 1000, None)  # stage_1_and_2.py, one GPU, no offload


# --- command line ------------------------------------------------------------------------------


@pytest.fixture
def small_folder(tmp_path):
    small_config().save_pretrained(tmp_path)
    return tmp_path


def test_cli_json_adds_the_step(small_folder, capsys):
    argv = [str(small_folder), "--batch-size", "2", "--max-length", "16", "--no-gradient-checkpointing", "--no-bf16"]
    assert main([*argv, "--device-memory", "1GiB", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["components"]) == set(COMPONENTS) and set(result["phases"]) == set(PHASES)
    assert result["step_peak_bytes"] == max(result["phases"].values()) > result["peak_bytes"]
    assert result["margin_bytes"] == 2**30 - result["step_peak_bytes"]  # judged on the larger peak
    assert result["components"]["gradients"] == PARAMETERS * 4


def test_cli_table_names_the_phases(small_folder, capsys):
    assert main([str(small_folder), "--optim", "adamw_8bit", "--attn", "eager", "--device-memory", "80GiB"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in (*COMPONENTS, *PHASES, "peak of the step", "peak while loading", "fits in"))


def test_cli_help_names_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert all(text in out for text in ("DPOConfig", "(default 8)", "(default 1024)", "(default adamw_torch_fused)"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-size", "0"], "TrainOptions.per_device_train_batch_size=0 is not accepted"),
        (["--max-length", "0"], "TrainOptions.max_length=0 is not accepted"),
        (["--optim", "sgd"], "TrainOptions.optim='sgd' is not accepted"),
        (["--attn", "flex"], "--attn='flex' is not accepted"),
        (["--device", "tpu"], "TrainOptions.device='tpu' is not accepted"),
    ],
)
def test_cli_bad_training_input_exits_2_with_one_error_line(small_folder, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main([str(small_folder), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    (error_line,) = [line for line in err.splitlines() if "error:" in line]
    assert message in error_line and "accepted" in error_line


def test_cli_remote_code_config_says_it_needs_remote_code(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    folder = remote_code_checkpoint(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([str(folder)])
    assert exit_info.value.code == 2
    assert "needs the checkpoint's own code" in capsys.readouterr().err and not marker.exists()
    assert main([str(folder), "--trust-remote-code", "--json"]) == 0
    assert marker.exists()  # the checkpoint's code ran to build the meta model
    assert json.loads(capsys.readouterr().out)["step_peak_bytes"] > 0


def test_step_plan_of_an_8b_config_is_fast_once_imported():
    config = realsize_config("llama-3.1-8b")
    spec = LoadSpec("c", dtype="bfloat16")
    plan_training_step(spec, DPOOptions(), TrainOptions(), config)  # warm the modeling imports
    started = time.perf_counter()
    planned = plan_training_step(spec, DPOOptions(), TrainOptions(), config)
    assert time.perf_counter() - started < 10
    # bf16 gradients of every parameter: 8,030,261,248 (Llama-3.1-8B's published count) x 2
    assert planned.components["gradients"] == 8_030_261_248 * 2


# --- the documentation's table -------------------------------------------------------------------


def test_docs_table_is_what_the_generator_prints():
    page = (ROOT / "docs" / "training-step.md").read_text()
    printed = page.split("<!-- trl3168-table:begin -->\n", 1)[1].split("<!-- trl3168-table:end -->", 1)[0]
    assert printed == page_module.table(realsize_config("qwen2-0.5b"))
