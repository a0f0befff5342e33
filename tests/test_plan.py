"""The DPO load plan (`policyload.plan`), pinned by hand from TRL 1.16's `dpo_trainer.py`.

Every expected load list below is written from the source lines quoted next to it, not from the
code under test; every byte count is arithmetic on the tiny configs' shapes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fixtures.checkpoints import TINY_CONFIGS, make_config
from fixtures.realsize import realsize_config
from policyload import LoadSpec, Topology, plan_dpo_loads
from policyload.memory_model import meta_model, predict
from policyload.plan import DPOOptions, FromPolicy, Load, adapter_parameters, bill, main, parse_bytes

SRC = Path(__file__).resolve().parents[1] / "src"
CPU = Topology(None)
GPU = Topology("cuda", 0)


def tiny(architecture: str):
    config_class, fields = TINY_CONFIGS[architecture]
    return make_config(config_class, **fields)


@pytest.fixture
def bare_folder(tmp_path) -> Path:
    """A folder with config.json only: no weights, no tokenizer."""
    tiny("llama").save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    return tmp_path


def recipe_kwargs(dtype, device_map, **extra) -> dict:
    # scripts/dpo.py: model_init_kwargs = dict(revision=..., trust_remote_code=..., attn_implementation=..., dtype=...)
    # utils.py create_model_from_path: kwargs["dtype"] = getattr(torch, dtype); device_map default by device type
    return {
        "revision": "main",
        "trust_remote_code": False,
        "attn_implementation": None,
        "dtype": dtype,
        "device_map": device_map,
        **extra,
    }


# --- which loads happen, with which keywords --------------------------------------------------


def test_full_finetune_loads_reference_with_the_policys_keywords():
    # dpo_trainer.py:916 ref_model_init_kwargs = dict(args.model_init_kwargs or {}); then setdefaults that are
    # no-ops in the recipe (dtype and attn_implementation are already keys of model_init_kwargs)
    plan = plan_dpo_loads(LoadSpec("ckpt", dtype="bfloat16"), DPOOptions(), CPU)
    expected = recipe_kwargs(torch.bfloat16, None)
    assert plan.loads == (Load("policy", "disk", expected), Load("reference", "disk", expected))
    assert plan.adapter is None


@pytest.mark.parametrize(
    "distributed_type, device_map",
    [
        ("NO", "auto"),  # create_model_from_path: None if device.type in ("cpu", "mps") else "auto"
        ("FSDP", "auto"),  # not in ["MULTI_GPU", "DEEPSPEED"]: "auto" stays
        ("MULTI_GPU", None),  # dpo_trainer.py:920 if distributed_type in ["MULTI_GPU", "DEEPSPEED"]: device_map=None
        ("DEEPSPEED", None),
    ],
)
def test_device_map_per_distributed_type_on_an_accelerator(distributed_type, device_map):
    plan = plan_dpo_loads(LoadSpec("ckpt", dtype="float32"), DPOOptions(distributed_type=distributed_type), GPU)
    assert [load.role for load in plan.loads] == ["policy", "reference"]
    for load in plan.loads:
        assert load.kwargs == recipe_kwargs(torch.float32, device_map)


def test_precompute_loads_no_reference_outside_fsdp():
    # dpo_trainer.py:909 if is_peft_model(self.model) or (args.precompute_ref_log_probs and not self.is_fsdp_enabled)
    for distributed_type in ("NO", "MULTI_GPU", "DEEPSPEED"):
        options = DPOOptions(precompute_ref_log_probs=True, distributed_type=distributed_type)
        plan = plan_dpo_loads(LoadSpec("ckpt", dtype="bfloat16"), options, GPU)
        assert [load.role for load in plan.loads] == ["policy"]


def test_precompute_under_fsdp_loads_a_reference_and_frees_it():
    # dpo_trainer.py:1033 if self.is_fsdp_enabled and ref_model is None: self.ref_model = None
    options = DPOOptions(precompute_ref_log_probs=True, distributed_type="FSDP")
    plan = plan_dpo_loads(LoadSpec("ckpt", dtype="bfloat16"), options, GPU)
    assert plan.reference == Load("reference", "disk", recipe_kwargs(torch.bfloat16, "auto"), True)
    assert not plan.policy.freed_after_precompute


@pytest.mark.parametrize("precompute", [False, True])
@pytest.mark.parametrize("distributed_type", ["NO", "FSDP", "DEEPSPEED"])
def test_peft_loads_no_reference(precompute, distributed_type):
    # dpo_trainer.py:909 `is_peft_model(self.model)`: "the adapter can be disabled to revert to the initial model"
    options = DPOOptions(use_peft=True, precompute_ref_log_probs=precompute, distributed_type=distributed_type)
    plan = plan_dpo_loads(LoadSpec("ckpt", dtype="bfloat16"), options, GPU)
    assert plan.reference is None and len(plan.loads) == 1
    assert plan.adapter.r == 16 and plan.adapter.alpha == 32 and plan.adapter.target_modules is None


def test_quantized_policy_with_peft_carries_the_quantization_config_and_bf16_adapter():
    # dpo_trainer.py:568 model_init_kwargs["quantization_config"] = quantization_config
    # dpo_trainer.py:726 if _is_quantized_model: ... param.data = param.data.to(torch.bfloat16)
    spec = LoadSpec("ckpt", dtype="bfloat16", load_in_4bit=True)
    plan = plan_dpo_loads(spec, DPOOptions(use_peft=True, lora_r=8), GPU)
    kwargs = dict(plan.policy.kwargs)
    quantization_config = kwargs.pop("quantization_config")
    assert kwargs == recipe_kwargs(torch.bfloat16, "auto")  # TRL 1.16: no kbit device map any more
    assert quantization_config.load_in_4bit and quantization_config.bnb_4bit_compute_dtype == torch.bfloat16
    assert plan.adapter.dtype == "bfloat16" and plan.adapter.r == 8


def test_adapter_dtype_rules():
    spec = LoadSpec("ckpt", dtype="bfloat16")
    # peft cast_adapter_dtype: float16/bfloat16 adapters upcast to float32 (autocast_adapter_dtype=True)
    assert plan_dpo_loads(spec, DPOOptions(use_peft=True), CPU).adapter.dtype == "float32"
    # dpo_trainer.py:650 zero_stage == 3 and not _is_quantized_model: autocast_adapter_dtype=False (base dtype)
    zero3 = DPOOptions(use_peft=True, distributed_type="DEEPSPEED", deepspeed_zero_stage=3)
    assert plan_dpo_loads(spec, zero3, CPU).adapter.dtype is None


def test_policy_instance_reference_comes_from_setdefaults_without_revision():
    # dpo_trainer.py:922-925 setdefault trust_remote_code, dtype=self.model.dtype,
    # attn_implementation=self.model.config._attn_implementation; no "revision" key at all
    spec = LoadSpec("ckpt", model_revision="v2", dtype="bfloat16")
    plan = plan_dpo_loads(spec, DPOOptions(policy_as_instance=True), CPU)
    assert plan.policy == Load("policy", "instance", None)
    assert plan.reference.kwargs == {
        "trust_remote_code": False,
        "dtype": torch.bfloat16,
        "attn_implementation": FromPolicy("config._attn_implementation"),
        "device_map": None,
    }
    auto = plan_dpo_loads(
        LoadSpec("ckpt", dtype="auto", attn_implementation="eager"), DPOOptions(policy_as_instance=True), GPU
    )
    assert auto.reference.kwargs["dtype"] == FromPolicy("dtype")
    assert auto.reference.kwargs["attn_implementation"] == "eager"
    assert auto.reference.kwargs["device_map"] == "auto"


# --- bad combinations ------------------------------------------------------------------------


@pytest.mark.parametrize("quant", ["load_in_4bit", "load_in_8bit"])
def test_quantized_policy_without_peft_is_refused(quant):
    with pytest.raises(ValueError, match=rf"LoadSpec\.{quant}=True is not accepted with DPOOptions\.use_peft=False"):
        plan_dpo_loads(LoadSpec("ckpt", dtype="bfloat16", **{quant: True}), DPOOptions(), CPU)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"distributed_type": "FSDP2"}, r"DPOOptions\.distributed_type='FSDP2' is not accepted; accepted: \('NO'"),
        ({"deepspeed_zero_stage": 3}, r"deepspeed_zero_stage=3 is not accepted with distributed_type='NO'"),
        ({"lora_r": 0}, r"DPOOptions\.lora_r=0 is not accepted; accepted: an integer >= 1"),
        ({"lora_alpha": -1}, r"DPOOptions\.lora_alpha=-1"),
        ({"use_peft": "yes"}, r"DPOOptions\.use_peft='yes' is not accepted; accepted: True or False"),
        ({"lora_target_modules": ()}, r"DPOOptions\.lora_target_modules=\(\)"),
    ],
)
def test_bad_options_name_field_value_and_accepted(fields, message):
    with pytest.raises(ValueError, match=message):
        DPOOptions(**fields)


def test_targets_matching_nothing_are_refused():
    plan = plan_dpo_loads(LoadSpec("ckpt"), DPOOptions(use_peft=True, lora_target_modules=["nope"]), CPU)
    with pytest.raises(ValueError, match=r"matches no linear layer"):
        bill(plan, tiny("llama"))


# --- bytes ---------------------------------------------------------------------------------


def test_lora_parameters_by_hand():
    llama = meta_model(tiny("llama"))
    # tiny llama: hidden 64, 4 heads of 16, 2 kv heads -> q 64->64, k/v 64->32, o 64->64, mlp 64<->128, 2 layers
    # PEFT default for llama: q_proj, v_proj: r*(64+64) + r*(64+32) = 224r per layer, 448r in all
    default = plan_dpo_loads(LoadSpec("c"), DPOOptions(use_peft=True, lora_r=16), CPU).adapter
    assert adapter_parameters(llama, default) == 448 * 16
    # all-linear (lm_head excluded): q 128 + k 96 + v 96 + o 128 + gate 192 + up 192 + down 192 = 1024r per layer
    everything = plan_dpo_loads(
        LoadSpec("c"), DPOOptions(use_peft=True, lora_r=8, lora_target_modules="all-linear"), CPU
    )
    assert adapter_parameters(llama, everything.adapter) == 2048 * 8
    # gpt2's default target c_attn is a Conv1D 64 -> 192: r*(64+192) per layer, 2 layers
    gpt2 = meta_model(tiny("gpt2"))
    assert adapter_parameters(gpt2, default) == 512 * 16


def test_bill_full_finetune_is_two_policies():
    config = tiny("llama")
    spec = LoadSpec("c", dtype="bfloat16")
    result = bill(plan_dpo_loads(spec, DPOOptions(), CPU), config)
    # parameters: embed 256*64 + lm_head 256*64 (untied) + 2 layers * (q 4096 + k 2048 + v 2048 + o 4096
    # + 3 * 8192 mlp + 2 * 64 norms) + final norm 64 = 106816, at 2 bytes each
    assert predict(spec, config).unquantized_parameter_bytes == 106816 * 2
    policy = predict(spec, config).total_bytes
    assert result["policy_bytes"] == result["reference_bytes"] == policy
    assert result["adapter_bytes"] == 0 and result["total_bytes"] == 2 * policy
    # peak: the reference loads on top of the policy; nothing quantized, so no transient (tests/test_dpo_bill.py)
    assert result["peak_bytes"] == 2 * policy


def test_bill_qlora():
    config = tiny("llama")
    spec = LoadSpec("c", dtype="bfloat16", load_in_4bit=True)
    result = bill(plan_dpo_loads(spec, DPOOptions(use_peft=True), CPU), config)
    assert result["policy_bytes"] == predict(spec, config).total_bytes
    assert result["reference_bytes"] == 0
    assert result["adapter_bytes"] == 448 * 16 * 2  # bf16 after TRL's cast
    assert result["total_bytes"] == result["policy_bytes"] + result["adapter_bytes"]


def test_bill_lora_fp32_adapter_on_bf16_policy():
    result = bill(plan_dpo_loads(LoadSpec("c", dtype="bfloat16"), DPOOptions(use_peft=True), CPU), tiny("llama"))
    assert result["adapter_bytes"] == 448 * 16 * 4


def test_bill_of_an_8b_config_is_fast_once_imported():
    config = realsize_config("llama-3.1-8b")
    plan = plan_dpo_loads(LoadSpec("c", dtype="bfloat16", load_in_4bit=True), DPOOptions(use_peft=True), CPU)
    bill(plan, config)  # warm the modeling imports
    started = time.perf_counter()
    result = bill(plan, config)
    assert time.perf_counter() - started < 10
    # Llama-3.1-8B, q 4096->4096, v 4096->1024, 32 layers: 16 * (8192 + 5120) * 32 params, bf16
    assert result["adapter_bytes"] == 16 * (8192 + 5120) * 32 * 2


# --- command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [("80GiB", 80 * 2**30), ("80GB", 80 * 10**9), ("85899345920", 85899345920), ("1.5 TiB", int(1.5 * 2**40))],
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


def test_cli_json_keys(bare_folder, capsys):
    assert main([str(bare_folder), "--dtype", "bfloat16", "--device-memory", "1GiB", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    keys = {"policy_bytes", "reference_bytes", "adapter_bytes", "total_bytes", "peak_bytes", "fits"}
    assert keys <= set(result)
    assert all(isinstance(result[k], int) for k in keys - {"fits"})
    # judged on the larger of the load peak and the training step's peak (tests/test_train_plan.py)
    decisive = max(result["peak_bytes"], result["step_peak_bytes"])
    assert result["fits"] is True and result["margin_bytes"] == 2**30 - decisive


def test_cli_table(bare_folder, capsys):
    assert main([str(bare_folder / "config.json"), "--load-in-4bit", "--dtype", "bfloat16", "--use-peft"]) == 0
    out = capsys.readouterr().out
    assert "reference (none)" in out and "peak while loading" in out and "GiB" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dtype", "bf16"], "LoadSpec.dtype='bf16' is not accepted"),
        (["--load-in-4bit", "--load-in-8bit", "--use-peft"], "load_in_4bit=True and LoadSpec.load_in_8bit=True"),
        (["--load-in-4bit"], "use_peft=False"),
        (["--device-memory", "lots"], "--device-memory='lots' is not accepted"),
        (["--distributed-type", "TPU"], "distributed_type='TPU'"),
    ],
)
def test_cli_bad_input_exits_2(bare_folder, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main([str(bare_folder), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "policyload.plan: error: " in err and message in err


def test_cli_folder_without_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no config.json there" in capsys.readouterr().err


def test_cli_runs_offline_on_a_bare_folder(bare_folder):
    env = {"PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-m", "policyload.plan", str(bare_folder), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["fits"] is None
