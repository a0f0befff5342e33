"""Tests of the suite's own machinery: case ids, outcome comparison, the divergence file."""

import re

import pytest
import torch
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from policyload.cases import ConfigCase, config_cases, load_cases

from .agreement import ABSENT, Config, Outcome, decode, divergence_kind, explain, load_divergences
from .cases import all_case_ids
from .implementation import builtin_implementations
from .trl_release import facts_for


def test_case_ids_spell_the_case():
    case = ConfigCase("bfloat16", "4bit", "nf4", True, "uint8")
    assert (case.id, ConfigCase("bf16", "4bit", "int4", False, None).id) == (
        "bf16-4bit-nf4-nested-uint8",
        "dtype=bf16-4bit-qtype=int4-flat-defstore",
    )


def test_matrices_are_full_products_with_unique_ids():
    assert (len(config_cases()), len({c.id for c in config_cases()})) == (300, 300)
    assert (len(load_cases()), len({c.id for c in load_cases()})) == (110, 110)


@pytest.mark.parametrize(
    "reference, trl, kind",
    [
        (Outcome({"a": 1}), Outcome({"a": 1}), None),
        (Outcome(error="ValueError"), Outcome(error="ValueError"), None),
        (Outcome(error="ValueError"), Outcome({"a": 1}), "trl-accepts"),
        (Outcome(error="ValueError"), Outcome(error="AttributeError"), "trl-crashes"),
        # another implementation that crashes exactly as TRL does behaves like TRL
        (Outcome(error="AttributeError"), Outcome(error="AttributeError"), None),
        (Outcome(error="TypeError"), Outcome(error="AttributeError"), "trl-crashes"),
        (Outcome({"a": 1}), Outcome(error="ValueError"), "trl-rejects"),
        (Outcome({"a": 1}), Outcome({"a": 2}), "values-differ"),
        # the type is part of the value: a dtype is not its name, True is not 1, a config is not a dict
        (Outcome({"dtype": "bfloat16"}), Outcome({"dtype": torch.bfloat16}), "values-differ"),
        (Outcome({"device_map": {"": True}}), Outcome({"device_map": {"": 1}}), "values-differ"),
        (Outcome({"q": {"a": 1}}), Outcome({"q": Config("BitsAndBytesConfig", {"a": 1})}), "values-differ"),
        (Outcome({"q": Config("A", {"a": 1})}), Outcome({"q": Config("B", {"a": 1})}), "values-differ"),
        (Outcome({"q": Config("A", {"a": 1})}), Outcome({"q": Config("A", {"a": 1})}), None),
    ],
)
def test_divergence_kind(reference, trl, kind):
    assert divergence_kind(reference, trl) == kind


def divergences(tmp_path, *entries: str):
    path = tmp_path / "divergences.toml"
    path.write_text("".join(f'[[divergence]]\nlevel = "x"\ntrl = ">=0"\nreason = "r"\n{entry}\n' for entry in entries))
    return load_divergences(path)


QUANT = "quantization_config.bnb_4bit_quant_storage"
STORAGE_ENTRY = (
    'cases = ["a-*"]\nkind = "values-differ"\n'
    f'differs = {{ "{QUANT}" = "bfloat16", device_map = "auto" }}\n'
    f'reference = {{ "{QUANT}" = "uint8", device_map = {{ "" = 1 }} }}\n'
)


def kwargs(storage="uint8", device_map=ABSENT, **more):
    value = {
        "dtype": torch.bfloat16,
        "quantization_config": Config("BitsAndBytesConfig", {"bnb_4bit_quant_storage": storage}),
    }
    return Outcome({**value, **({} if device_map is ABSENT else {"device_map": device_map}), **more})


REFERENCE = kwargs("uint8", {"": 1})


def test_explain_accepts_exactly_the_listed_values(tmp_path):
    listed = divergences(tmp_path, STORAGE_ENTRY)
    assert explain("x", "a-1", REFERENCE, kwargs("bfloat16", "auto"), divergences=listed) is None


def test_explain_names_each_key_of_an_unlisted_divergence(tmp_path):
    unlisted = explain(
        "x", "b-1", REFERENCE, kwargs("bfloat16", "auto"), divergences=divergences(tmp_path, STORAGE_ENTRY)
    )
    assert "unlisted divergence (values-differ)" in unlisted
    assert f"\n    {QUANT}: reference 'uint8', TRL 'bfloat16' [b-1]" in unlisted
    assert "\n    device_map: reference {'': 1}, TRL 'auto' [b-1]" in unlisted


@pytest.mark.parametrize(
    "trl, refusal",
    [
        # a wrong value at a listed key
        (kwargs("float16", "auto"), f"{QUANT}: TRL 'float16', listed 'bfloat16' [a-1]"),
        # an extra differing key
        (kwargs("bfloat16", "auto", revision="v2"), "revision: reference <absent>, TRL 'v2' [a-1] (not a listed key)"),
        (
            kwargs("bfloat16", "auto", dtype="bfloat16"),
            "dtype: reference torch.bfloat16, TRL 'bfloat16' [a-1] (not a listed key)",
        ),
        # a listed key that no longer differs (the other still does)
        (kwargs("uint8", "auto"), f"{QUANT}: both 'uint8' [a-1] (listed key no longer differs)"),
        (kwargs("bfloat16", {"": 1}), "device_map: both {'': 1} [a-1] (listed key no longer differs)"),
    ],
)
def test_explain_refuses_what_the_entry_does_not_list(tmp_path, trl, refusal):
    message = explain("x", "a-1", REFERENCE, trl, divergences=divergences(tmp_path, STORAGE_ENTRY))
    assert message and refusal in message, message


def test_explain_refuses_a_reference_other_than_the_listed_one(tmp_path):
    """The fault of the issue: a device map that ignores the rank, {"": 0} on CUDA rank 1."""
    message = explain(
        "x",
        "a-1",
        kwargs("uint8", {"": 0}),
        kwargs("bfloat16", "auto"),
        divergences=divergences(tmp_path, STORAGE_ENTRY),
    )
    assert message and "device_map: reference {'': 0}, listed {'': 1} [a-1]" in message


def test_explain_refuses_a_divergence_that_no_longer_happens(tmp_path):
    message = explain("x", "a-1", REFERENCE, REFERENCE, divergences=divergences(tmp_path, STORAGE_ENTRY))
    assert message and "listed divergence no longer happens" in message


def test_entries_covering_one_case_add_up(tmp_path):
    listed = divergences(
        tmp_path,
        'cases = ["a-*"]\nkind = "values-differ"\ndiffers = { device_map = "auto" }\n',
        'cases = ["a-1"]\nkind = "values-differ"\ndiffers = { trust_remote_code = false }\n',
    )
    reference, trl = Outcome({"trust_remote_code": True}), Outcome({"trust_remote_code": False, "device_map": "auto"})
    assert explain("x", "a-1", reference, trl, divergences=listed) is None
    assert "trust_remote_code" in explain("x", "a-2", reference, trl, divergences=listed)


CRASH_ENTRY = 'cases = ["a-*"]\nkind = "trl-crashes"\nexception = "AttributeError"\nmessage = "no attribute \'auto\'"\n'


@pytest.mark.parametrize(
    "reference, trl, refusal",
    [
        (
            Outcome(error="ValueError"),
            Outcome(error="AttributeError", message="module 'torch' has no attribute 'auto'"),
            None,
        ),
        # a wrong exception type (a harness failure, say)
        (
            Outcome(error="ValueError"),
            Outcome(error="TypeError", message="no attribute 'auto'"),
            "TRL raises TypeError, listed AttributeError [a-1]",
        ),
        # the right type for another reason
        (
            Outcome(error="ValueError"),
            Outcome(error="AttributeError", message="'NoneType' object has no attribute 'x'"),
            "lacks the listed \"no attribute 'auto'\"",
        ),
        # the reference refusing with something other than ValueError
        (
            Outcome(error="KeyError"),
            Outcome(error="AttributeError", message="no attribute 'auto'"),
            "the reference raises KeyError",
        ),
    ],
)
def test_crash_entries_name_the_exception(tmp_path, reference, trl, refusal):
    message = explain("x", "a-1", reference, trl, divergences=divergences(tmp_path, CRASH_ENTRY))
    assert (message is None) if refusal is None else (refusal in message), message


@pytest.mark.parametrize(
    "entry, refusal",
    [
        ('cases = ["*"]\nkind = "trl-explodes"', "kind='trl-explodes'"),
        ('cases = ["*"]\nkind = "values-differ"', "needs ['differs']"),
        ('cases = ["*"]\nkind = "values-differ"\ndiffers = {}', "differs is empty"),
        ('cases = ["*"]\nkind = "trl-crashes"', "needs ['exception']"),
        ('cases = ["*"]\nkind = "trl-accepts"\nexception = "AttributeError"', "accepts []"),
        (
            'cases = ["*"]\nkind = "values-differ"\ndiffers = { a = 1 }\nreference = { b = 2 }',
            "reference names keys not in differs",
        ),
        ('cases = ["*"]\nkind = "values-differ"\ndiffers = { a = "<any>" }', "only at level"),
        ('cases = ["*"]\nkind = "values-differ"\ndiffers = { "a*" = 1 }', "only at level"),
        ('cases = ["*"]\nkind = "values-differ"\ndiffers = { a = "<bfloat16>" }', "unknown token '<bfloat16>'"),
    ],
)
def test_divergence_file_rejects_bad_entries(tmp_path, entry, refusal):
    with pytest.raises(ValueError, match=re.escape(refusal)):
        divergences(tmp_path, entry)


def test_values_in_the_file_keep_their_type():
    assert decode({"a": "<torch.bfloat16>", "b": "bfloat16", "c": "<absent>", "d": "<None>", "e": {"": 1}}) == {
        "a": torch.bfloat16,
        "b": "bfloat16",
        "c": ABSENT,
        "d": None,
        "e": {"": 1},
    }


def every_implementations_divergences() -> list:
    return [(i.name, d) for i in builtin_implementations() for d in load_divergences(i.divergences)]


@pytest.mark.parametrize(
    "divergence", every_implementations_divergences(), ids=lambda d: f"{d[0]}:{d[1].level}:{d[1].cases[0]}:{d[1].kind}"
)
def test_every_listed_divergence_names_real_cases(divergence):
    """In every implementation's file, not only the selected one's."""
    _, divergence = divergence
    ids = all_case_ids()[divergence.level]
    lower_bounds = (Version(s.version) for s in SpecifierSet(divergence.trl) if s.operator in (">=", "=="))
    release = max(lower_bounds, default=Version("0"))
    assert any(divergence.covers(divergence.level, case_id, release) for case_id in ids)


def test_release_table_picks_the_last_row_at_or_below():
    releases = ("0.25.1", "1.16.0", "1.7.1", "1.9.2")
    assert tuple(facts_for(Version(release)).since for release in releases) == ("0.23", "1.10", "1.7", "1.8")
