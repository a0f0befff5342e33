"""The drift report, on small recorded observation files."""

import json
import re

import pytest

from policyload.drift import cause, drift_table, main

OLD = {
    "trl": "0.25.1",
    "observations": {
        "defaults": {"dtype": None, "revision": "main"},
        "bf16-4bit-nf4-flat-defstore-cpu": {
            "dtype": "bfloat16",
            "quantization_config": {"bnb_4bit_quant_storage": "bfloat16", "load_in_4bit": True},
        },
        "bf16-noquant-nf4-flat-defstore-cpu": {"dtype": "bfloat16"},
    },
}
NEW = {
    "trl": "1.16.0",
    "observations": {
        "defaults": {"dtype": "float32", "revision": "main"},
        "bf16-4bit-nf4-flat-defstore-cpu": {
            "dtype": "bfloat16",
            "quantization_config": {"bnb_4bit_quant_storage": "uint8", "load_in_4bit": True},
        },
        "bf16-noquant-nf4-flat-defstore-cpu": {"dtype": "bfloat16"},
    },
}


def test_each_change_is_one_row_grouped_by_cause():
    rows = drift_table([NEW, OLD]).splitlines()[2:]  # given out of order: sorted by release
    assert rows == [
        "| 0.25.1 -> 1.16.0 | defaults | `dtype` | None -> 'float32' (1) | `defaults` |",
        "| 0.25.1 -> 1.16.0 | quant storage | `quantization_config.bnb_4bit_quant_storage` "
        "| 'bfloat16' -> 'uint8' (1) | `bf16-4bit-nf4-flat-defstore-cpu` |",
    ]


def test_identical_runs_say_no_change():
    assert drift_table([OLD, {**OLD, "trl": "0.28.0"}]).splitlines()[2] == "| 0.25.1 -> 0.28.0 | no change | | | |"


@pytest.mark.parametrize(
    "keyword, case_id, expected",
    [
        ("dtype", "bf16-4bit-nf4-flat-defstore-cpu", "dtype mapping"),
        ("dtype", "attn_implementation=eager", "defaults"),
        ("device_map", "bf16-8bit-nf4-flat-defstore-cuda1", "device_map"),
        ("error", "auto-4bit-nf4-flat-defstore-cpu", "crash"),
        ("revision", "defaults", "other (revision)"),
        ("reference.kwargs.dtype", "dpo-bf16-full-NO-instance", "reference"),
        ("reference", "dpo-bf16-precompute-FSDP-path", "reference"),
        ("adapter.dtype", "dpo-bf16-qlora-NO-path", "adapter"),
        ("policy.kwargs.device_map", "dpo-bf16-full-NO-path", "device_map"),
        ("policy.kwargs.quantization_config.bnb_4bit_quant_storage", "dpo-bf16-qlora-NO-path", "quant storage"),
    ],
)
def test_cause_names_the_reason(keyword, case_id, expected):
    assert cause(keyword, case_id) == expected


def test_command_reads_a_folder_and_refuses_bad_files(tmp_path, capsys):
    (tmp_path / "old.json").write_text(json.dumps(OLD))
    (tmp_path / "new.json").write_text(json.dumps(NEW))
    assert main([str(tmp_path)]) == 0
    assert "quant storage" in capsys.readouterr().out

    (tmp_path / "new.json").write_text(json.dumps(NEW)[:40])
    assert main([str(tmp_path)]) == 2
    assert re.search(r"^error: .*new.json is not an observation file \(JSONDecodeError", capsys.readouterr().err)


def test_fresh_clone_without_observations_is_told_to_run_the_matrix_first(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "out" / "observations")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"{tmp_path / 'out' / 'observations'}: not found" in error
    assert "run `tox -m trl-matrix` first" in error
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "empty")])
    assert "need the observations of at least two TRL releases; got []" in capsys.readouterr().err


# DPO-plan observations (conformance/test_dpo_plan.py): fields keyed `<role>.<field>`.
DPO_OLD = {
    "trl": "1.9.2",
    "observations": {
        "dpo-bf16-full-NO-instance": {
            "policy.source": "instance",
            "reference.source": "disk",
            "reference.kwargs.trust_remote_code": False,
            "reference.kwargs.dtype": "float32",
            "reference.freed_after_precompute": False,
        },
        "dpo-bf16-precompute-FSDP-path": {
            "policy.source": "disk",
            "policy.kwargs.dtype": "bfloat16",
            "policy.kwargs.device_map": "auto",
        },
    },
}
DPO_NEW = {
    "trl": "1.16.0",
    "observations": {
        "dpo-bf16-full-NO-instance": {
            "policy.source": "instance",
            "reference.source": "disk",
            "reference.kwargs.trust_remote_code": False,
            "reference.kwargs.dtype": "bfloat16",
            "reference.kwargs.attn_implementation": "sdpa",
            "reference.freed_after_precompute": False,
        },
        "dpo-bf16-precompute-FSDP-path": {
            "policy.source": "disk",
            "policy.kwargs.dtype": "bfloat16",
            "reference.source": "disk",
            "reference.kwargs.dtype": "bfloat16",
            "reference.freed_after_precompute": True,
        },
    },
}


def test_reference_changes_are_rows_of_their_own_and_a_new_reference_is_one_row():
    assert drift_table([DPO_OLD, DPO_NEW]).splitlines()[2:] == [
        "| 1.9.2 -> 1.16.0 | device_map | `policy.kwargs.device_map` | 'auto' -> '<absent>' (1) "
        "| `dpo-bf16-precompute-FSDP-path` |",
        "| 1.9.2 -> 1.16.0 | reference | `reference` | '<absent>' -> 'disk' (1) | `dpo-bf16-precompute-FSDP-path` |",
        "| 1.9.2 -> 1.16.0 | reference | `reference.kwargs.attn_implementation` | '<absent>' -> 'sdpa' (1) "
        "| `dpo-bf16-full-NO-instance` |",
        "| 1.9.2 -> 1.16.0 | reference | `reference.kwargs.dtype` | 'float32' -> 'bfloat16' (1) "
        "| `dpo-bf16-full-NO-instance` |",
    ]
