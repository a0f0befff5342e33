"""Level 3: what TRL's own DPO entry point passes to `from_pretrained`, against the implementation's
full keyword set (the reference's `build_model_kwargs` by default).

The reference side is `build_model_kwargs(LoadSpec.from_model_config(cfg))` of the very
`ModelConfig` TRL reads, which is how a TRL user reaches policyload.

TRL's `scripts/dpo.py main()` runs for real, on a real `ModelConfig` and `DPOConfig`, with
`from_pretrained` intercepted at its first call (so no weights are read and nothing trains).
"""

import inspect

import pytest
import transformers

from policyload import LoadSpec, Topology, build_model_kwargs

from .agreement import Outcome, assert_agrees, observe, same
from .cases import FIELD_CASES, RECIPE_LEVEL, TRUST_REMOTE_CODE_CASE, fields_id, recipe_case_id, recipe_cases
from .contract_recording import RECORDED, RECORDED_TRL, kbit_recipe_cases, recipe_device_map, recorded_here
from .implementation import selected
from .trl_oracle import comparable_kwargs, model_config, recipe_kwargs
from .trl_release import TRL


def implementation(path: str, fields: dict, topology: Topology) -> Outcome:
    """The implementation under test's keywords, observed (skips the test where it has none)."""
    model_kwargs = selected().function(RECIPE_LEVEL)
    return observe(lambda: comparable_kwargs(model_kwargs(path, fields, topology)))


@pytest.mark.parametrize("case, topology", recipe_cases())
def test_recipe_kwargs_match_trl(case, topology, tiny_checkpoints, preference_data, tmp_path, record_observation):
    path = str(tiny_checkpoints["llama"])
    case_id = recipe_case_id(case, topology)
    ours = implementation(path, case.model_config_fields(), topology)  # first: skips before TRL runs
    trl = observe(recipe_kwargs, path, case.model_config_fields(), preference_data, tmp_path, topology)
    record_observation(case_id, trl)
    if recorded_here() and case_id in RECORDED["recipe_device_map"]:
        observed, recorded = recipe_device_map(trl.value), RECORDED["recipe_device_map"][case_id]
        assert same(observed, recorded), (
            f"device_map: trl {TRL} {observed!r}, recorded {recorded!r} [{case_id}]: the recording is stale; "
            "re-record (python -m conformance.contract_recording --write)"
        )
    assert_agrees(RECIPE_LEVEL, case_id, ours, trl)


@pytest.mark.skipif(not selected().is_reference, reason="checks the reference's keywords against TRL 1.7.1's recording")
@pytest.mark.parametrize("case, topology", kbit_recipe_cases())
def test_recipe_device_map_matches_recorded_contract(case, topology, tiny_checkpoints):
    """On every release, TRL's newest included: the reference's k-bit device_map against what TRL's
    recipe passed while `get_kbit_device_map` decided it (recorded from TRL 1.7.1)."""
    case_id = recipe_case_id(case, topology)
    keywords = implementation(str(tiny_checkpoints["llama"]), case.model_config_fields(), topology).value
    observed, recorded = recipe_device_map(keywords), RECORDED["recipe_device_map"][case_id]
    assert same(observed, recorded), (
        f"device_map: reference {observed!r}, recorded from trl {RECORDED_TRL} {recorded!r} [{case_id}]"
    )


def test_recording_covers_every_kbit_recipe_case():
    assert set(RECORDED["recipe_device_map"]) == {recipe_case_id(*param.values) for param in kbit_recipe_cases()}


def test_device_map_none_is_the_keyword_left_out():
    """Why `comparable_kwargs` may drop `device_map=None`: `from_pretrained` reads it as
    `kwargs.pop("device_map", None)`, the auto classes never touch it, and a config does not take
    it (AutoConfig hands it back unused). `quantization_config=None` is not dropped: a config
    takes it, replacing a pre-quantized checkpoint's own."""
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    assert 'kwargs.pop("device_map", None)' in inspect.getsource(transformers.PreTrainedModel.from_pretrained)
    assert "device_map" not in inspect.getsource(_BaseAutoModelClass.from_pretrained)
    config = transformers.LlamaConfig()
    config.quantization_config = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    from_dict = config.__class__.from_dict
    assert from_dict(config.to_dict(), return_unused_kwargs=True, device_map=None)[1] == {"device_map": None}
    replacement = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    assert from_dict(config.to_dict(), return_unused_kwargs=True, quantization_config=replacement)[1] == {}


@pytest.mark.parametrize("fields", FIELD_CASES, ids=fields_id)
def test_recipe_passes_other_fields(fields, tiny_checkpoints, preference_data, tmp_path, record_observation):
    path = str(tiny_checkpoints["llama"])
    case_id = fields_id(fields)
    ours = implementation(path, fields, Topology(None))
    trl = observe(recipe_kwargs, path, fields, preference_data, tmp_path)
    record_observation(case_id, trl)
    assert_agrees(RECIPE_LEVEL, case_id, ours, trl)


def test_trust_remote_code_set_on_model_config(tiny_checkpoints, preference_data, tmp_path, record_observation):
    """Code written for TRL < 1.7 sets `model_args.trust_remote_code = True`; from 1.7 TRL reads
    the training config's field instead, and the attribute is silently ignored."""
    path = str(tiny_checkpoints["llama"])
    case_id = TRUST_REMOTE_CODE_CASE
    # Another implementation takes the case as fields; the reference is reached from the very
    # ModelConfig object TRL reads (policyload's own way in), below.
    ours = None if selected().is_reference else implementation(path, {"trust_remote_code": True}, Topology(None))
    config = model_config(path)
    config.trust_remote_code = True
    trl = observe(recipe_kwargs, path, {}, preference_data, tmp_path, model_config_object=config)
    record_observation(case_id, trl)
    if ours is None:
        from_config = LoadSpec.from_model_config
        ours = observe(lambda: comparable_kwargs(build_model_kwargs(from_config(config), Topology(None))))
    assert_agrees(RECIPE_LEVEL, case_id, ours, trl)
