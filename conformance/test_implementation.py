"""The implementation under test as a parameter: how it is named, refused, skipped and adapted."""

import importlib.util
import inspect
import re
import sys
from pathlib import Path

import pytest

from .agreement import Outcome, assert_agrees
from .divergences import load_divergences
from .implementation import (
    BUILTIN,
    COMPARISONS,
    ENV,
    Implementation,
    builtin_implementations,
    load_implementation,
    selected,
)


@pytest.mark.parametrize(
    "value, why",
    [
        ("alignment_handbook", "not a built-in name and not of the form module:object"),
        ("conformance.no_such_module:IMPLEMENTATION", "module 'conformance.no_such_module' does not import"),
        ("conformance.cases:NOPE", "module 'conformance.cases' has no attribute 'NOPE'"),
        ("conformance.cases:RECIPE_LEVEL", "conformance.cases:RECIPE_LEVEL is a str, not an Implementation"),
    ],
)  # fmt: skip
def test_a_bad_implementation_is_refused_naming_field_value_and_accepted(value, why):
    with pytest.raises(ValueError) as error:
        load_implementation(value)
    message = str(error.value)
    assert message.startswith(f"{ENV}={value!r} is not accepted: {why}")
    assert message.endswith(
        "accepted: one of ['alignment-handbook', 'axolotl', 'llamafactory', 'ms-swift', 'oumi', 'reference'] "
        "or 'module:object' naming a conformance.implementation.Implementation"
    )


def test_module_object_and_builtin_name_give_the_same_implementation():
    assert load_implementation("conformance.implementations.reference:IMPLEMENTATION") is load_implementation(
        "reference"
    )
    names = ["reference", "alignment-handbook", "llamafactory", "oumi", "axolotl", "ms-swift"]
    assert [i.name for i in builtin_implementations()] == names
    assert set(BUILTIN) == set(names)


@pytest.mark.parametrize("implementation", builtin_implementations(), ids=lambda i: i.name)
def test_every_builtin_has_a_divergence_file_that_loads(implementation):
    assert implementation.divergences.exists()
    assert isinstance(load_divergences(implementation.divergences), list)


def test_a_level_without_a_function_is_skipped_saying_which_and_why(tmp_path):
    partial = Implementation("partial", tmp_path / "none.toml", quantization_config=dict, missing={"recipe": "why"})
    assert partial.function("quantization") is dict
    with pytest.raises(pytest.skip.Exception) as skipped:
        partial.function("recipe")
    assert str(skipped.value) == "implementation 'partial' has no model_kwargs function (level recipe): why"
    with pytest.raises(pytest.skip.Exception) as skipped:
        partial.function("device-map")
    assert str(skipped.value) == (
        "implementation 'partial' has no device_map function (level device-map): not provided by the adapter"
    )


def test_a_case_the_implementation_cannot_express_is_skipped_and_not_counted():
    inapplicable = Outcome(error="NotApplicable", message="no such field")
    with pytest.raises(pytest.skip.Exception, match=f"not expressible in {selected().name}: no such field"):
        assert_agrees("quantization", "bf16-4bit-nf4-flat-defstore", inapplicable, Outcome(value=None))
    before = {level: dict(cases) for level, cases in COMPARISONS.items()}
    assert_agrees("quantization", "never-a-case", inapplicable, Outcome(value=None), skip_inapplicable=False)
    assert COMPARISONS == before


@pytest.mark.skipif(
    importlib.util.find_spec("alignment") is None, reason="requires alignment-handbook (tox -e impl-alignment-handbook)"
)
def test_alignment_handbook_is_reached_without_its_package_init():
    """Its __init__ imports alignment.decontaminate, whose module body downloads a dataset."""
    from .implementations.alignment_handbook import model_utils

    module = model_utils()
    assert Path(module.__file__).name == "model_utils.py"
    assert "alignment.decontaminate" not in sys.modules
    assert not hasattr(sys.modules["alignment"], "__version__")  # set by the __init__ it skipped


#: What alignment-handbook v0.3.0's scripts/run_dpo.py passes DPOTrainer by name (lines 190-204), and the
#: DPOConfig fields it reads (beta 195, max_length 198, max_prompt_length 199, loss_type 201).
RUN_DPO_TRAINER_KEYWORDS = (
    "model_init_kwargs", "ref_model_init_kwargs", "beta", "tokenizer", "max_length", "max_prompt_length", "loss_type",
)
RUN_DPO_CONFIG_FIELDS = ("beta", "max_length", "max_prompt_length", "loss_type")


def model_loads_in_package(package_dir: Path) -> set[str]:
    """Every `X.from_pretrained` called in a package's sources."""
    return {
        match
        for source in package_dir.rglob("*.py")
        for match in re.findall(r"(\w+)\.from_pretrained\(", source.read_text())
    }


@pytest.mark.skipif(
    importlib.util.find_spec("alignment") is None, reason="requires alignment-handbook (tox -e impl-alignment-handbook)"
)
def test_alignment_handbook_loads_no_model_and_its_script_cannot_reach_this_trl():
    """Why its recipe and DPO-plan cells say "no function": the release's package loads only a tokenizer,
    and the DPO load (inline in the repository's scripts/run_dpo.py) does not run against TRL 1.16.
    Fails when a release brings a model-loading function (then write `model_kwargs`/`dpo_loads`) or
    when TRL takes the script's keywords again."""
    import trl

    from .implementations.alignment_handbook import model_utils

    package_dir = Path(model_utils().__file__).parent
    assert model_loads_in_package(package_dir) == {"AutoTokenizer"}
    trainer_parameters = inspect.signature(trl.DPOTrainer.__init__).parameters
    assert [k for k in RUN_DPO_TRAINER_KEYWORDS if k in trainer_parameters] == []
    assert [f for f in RUN_DPO_CONFIG_FIELDS if f not in trl.DPOConfig.__dataclass_fields__] == ["max_prompt_length"]


def test_an_implementation_whose_framework_is_not_installed_is_refused_naming_its_environment(tmp_path):
    missing = Implementation("x", tmp_path / "x.toml", requires=("no-such-distribution-for-policyload", "impl-x"))
    with pytest.raises(ValueError) as error:
        missing.check_installed()
    assert str(error.value) == (
        f"{ENV}='x' needs the distribution 'no-such-distribution-for-policyload', not installed here; "
        "accepted: an environment that has it (tox -e impl-x)"
    )
    Implementation("y", tmp_path / "y.toml", requires=("pytest", "unit")).check_installed()  # installed: no error


@pytest.mark.skipif(importlib.util.find_spec("swift") is None, reason="requires ms-swift (tox -e impl-ms-swift)")
def test_ms_swift_dpo_arguments_need_a_stand_in_for_trl_ppo_and_build_trl_dpo_config(tiny_checkpoints, tmp_path):
    """ms-swift 4.6.0 rlhf_trainers/arguments.py:16 imports trl.experimental.ppo, which TRL 1.16 lacks:
    without the adapter's stand-in the module does not import; with it the DPO arguments are TRL's own."""
    import subprocess

    from trl import DPOConfig

    from .implementations.ms_swift import swift_arguments

    importing = [sys.executable, "-c", "import swift.rlhf_trainers.arguments"]
    bare = subprocess.run(importing, capture_output=True, text=True)
    assert bare.returncode == 1
    assert "No module named 'trl.experimental.ppo'" in bare.stderr
    args = swift_arguments(str(tiny_checkpoints["llama"]), {}, str(tmp_path))
    assert args.rlhf_type == "dpo"
    assert isinstance(args.training_args, DPOConfig)
    assert args.ref_model == str(tiny_checkpoints["llama"])  # a full fine-tune: the reference is the policy's path


#: TRL's adapter on the tiny Llama for `--use_peft` (ModelConfig: r 16, alpha 32, dropout 0.05; PEFT's
#: Llama default targets q_proj and v_proj, in each of its two layers).
TRL_LORA = {"r": 16, "alpha": 32, "dropout": 0.05}
Q_V_TARGETS = tuple(f"model.layers.{layer}.self_attn.{name}_proj" for layer in (0, 1) for name in ("q", "v"))


def _trl_and_framework(case, dpo_checkpoint, preference_data, tmp_path):
    from .agreement import observe
    from .test_dpo_plan import trl_loads

    path = str(dpo_checkpoint)
    trl = observe(trl_loads, case, path, preference_data, tmp_path)
    return trl, observe(selected().dpo_loads, case, path)


@pytest.mark.skipif(selected().name != "axolotl", reason="requires axolotl selected (tox -e impl-axolotl)")
def test_axolotl_lora_loads_no_reference_and_a_reference_loaded_anyway_is_reported(
    dpo_checkpoint, preference_data, tmp_path, monkeypatch
):
    """adapter: lora: one load, TRL's adapter (built by TRL's DPOTrainer, which axolotl's builder hands
    the LoraConfig); its builder does not import here without the stand-ins (`trainer_builders`), and
    TRL's kernels are left unpatched by them. Planted: a
    setup_reference_model that loads a reference anyway (what `rl_adapter_ref_model: true` asks for):
    the comparison with TRL's run reports the unlisted reference."""
    import subprocess

    import axolotl.train
    import trl.trainer.utils as trl_utils
    from axolotl.loaders.model import ModelLoader

    from .agreement import explain, observe
    from .cases import DPO_PLAN_LEVEL
    from .dpo_cases import DPOCase

    bare = subprocess.run([sys.executable, "-c", "import axolotl.core.builders"], capture_output=True, text=True)
    assert bare.returncode == 1 and "No module named 'triton'" in bare.stderr  # the stand-ins are needed
    case = DPOCase("bfloat16", "peft")
    kernel = trl_utils.selective_log_softmax
    trl, ours = _trl_and_framework(case, dpo_checkpoint, preference_data, tmp_path)
    assert trl.value["adapter"] == ours.value["adapter"] == {
        **TRL_LORA, "targets": Q_V_TARGETS, "dtype": "float32", "base_dtype": "bfloat16"
    }  # fmt: skip
    assert sorted(ours.value) == ["adapter", "policy"]
    assert explain(DPO_PLAN_LEVEL, str(case), ours, trl) is None
    assert trl_utils.selective_log_softmax is kernel  # axolotl's patch manager found no Triton

    def loads_a_reference(cfg, tokenizer, processor=None):
        return ModelLoader(cfg, tokenizer, processor=processor, reference_model=True).load()[0]

    monkeypatch.setattr(axolotl.train, "setup_reference_model", loads_a_reference)
    planted = observe(selected().dpo_loads, case, str(dpo_checkpoint))
    assert planted.value["reference"]["source"] == "disk"
    message = explain(DPO_PLAN_LEVEL, str(case), planted, trl)
    unlisted_reference = rf"\n    reference: reference {{'source': 'disk'.*, TRL <absent> \[{case}\] \(not a listed"
    assert re.search(unlisted_reference, message)


@pytest.mark.skipif(selected().name != "ms-swift", reason="requires ms-swift selected (tox -e impl-ms-swift)")
def test_ms_swift_qlora_loads_no_reference_and_a_reference_loaded_anyway_is_reported(
    dpo_checkpoint, preference_data, tmp_path, monkeypatch
):
    """tuner_type lora on a 4-bit policy: one load, double quantization on, the adapter on every
    linear layer and float32 (TRL: q/v, bfloat16). Planted: arguments that keep a reference for LoRA
    (what RLHFArguments.__post_init__ sets for a full fine-tune): the comparison reports it."""
    from .agreement import explain, observe
    from .cases import DPO_PLAN_LEVEL
    from .dpo_cases import DPOCase
    from .implementations import ms_swift

    case = DPOCase("bfloat16", "qlora")
    trl, ours = _trl_and_framework(case, dpo_checkpoint, preference_data, tmp_path)
    every_linear = tuple(
        f"model.layers.{layer}.{name}"
        for layer in (0, 1)
        for name in ("mlp.down_proj", "mlp.gate_proj", "mlp.up_proj")
        + tuple(f"self_attn.{x}_proj" for x in ("k", "o", "q", "v"))
    )
    assert ours.value["adapter"] == {**TRL_LORA, "targets": every_linear, "dtype": "float32", "base_dtype": "bfloat16"}
    assert trl.value["adapter"] == {**TRL_LORA, "targets": Q_V_TARGETS, "dtype": "bfloat16", "base_dtype": "bfloat16"}
    assert ours.value["policy"]["kwargs"]["quantization_config"]["bnb_4bit_use_double_quant"] is True
    assert sorted(ours.value) == ["adapter", "policy"]
    assert explain(DPO_PLAN_LEVEL, str(case), ours, trl) is None

    arguments = ms_swift.swift_arguments

    def keeping_a_reference(path, fields, output_dir):
        args = arguments(path, fields, output_dir)
        args.ref_model, args.ref_model_type = args.model, args.model_type
        return args

    monkeypatch.setattr(ms_swift, "swift_arguments", keeping_a_reference)
    planted = observe(selected().dpo_loads, case, str(dpo_checkpoint))
    assert planted.value["reference"]["source"] == "disk"
    message = explain(DPO_PLAN_LEVEL, str(case), planted, trl)
    unlisted_reference = rf"\n    reference: reference {{'source': 'disk'.*, TRL <absent> \[{case}\] \(not a listed"
    assert re.search(unlisted_reference, message)
