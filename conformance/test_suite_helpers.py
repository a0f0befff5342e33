"""Tests of the suite's own machinery: case ids, outcome comparison, the divergence file."""

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from policyload.cases import ConfigCase, config_cases, load_cases

from .agreement import DIVERGENCES, Outcome, divergence_kind, explain, load_divergences
from .cases import all_case_ids
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
        (Outcome({"a": 1}), Outcome(error="ValueError"), "trl-rejects"),
        (Outcome({"a": 1}), Outcome({"a": 2}), "values-differ"),
    ],
)
def test_divergence_kind(reference, trl, kind):
    assert divergence_kind(reference, trl) == kind


def test_explain_fails_both_ways(tmp_path):
    listed = tmp_path / "divergences.toml"
    listed.write_text(
        '[[divergence]]\nlevel = "x"\ncases = ["a-*"]\ntrl = ">=0"\nkind = "values-differ"\nreason = "r"\n'
    )
    divergences = load_divergences(listed)
    differ = (Outcome({"k": 1}), Outcome({"k": 2}))
    assert explain("x", "a-1", *differ, divergences=divergences) is None
    unlisted = explain("x", "b-1", *differ, divergences=divergences)
    assert "unlisted divergence (values-differ)\n    k: reference 1, TRL 2" in unlisted
    assert "no longer happens" in explain("x", "a-1", Outcome(1), Outcome(1), divergences=divergences)


def test_divergence_file_rejects_bad_entries(tmp_path):
    bad = tmp_path / "divergences.toml"
    bad.write_text('[[divergence]]\nlevel = "x"\ncases = ["*"]\ntrl = ">=0"\nkind = "trl-explodes"\nreason = "r"\n')
    with pytest.raises(ValueError, match="kind='trl-explodes'"):
        load_divergences(bad)


@pytest.mark.parametrize("divergence", DIVERGENCES, ids=lambda d: f"{d.level}:{d.cases[0]}:{d.kind}")
def test_every_listed_divergence_names_real_cases(divergence):
    ids = all_case_ids()[divergence.level]
    lower_bounds = (Version(s.version) for s in SpecifierSet(divergence.trl) if s.operator in (">=", "=="))
    release = max(lower_bounds, default=Version("0"))
    assert any(divergence.covers(divergence.level, case_id, release) for case_id in ids)


def test_release_table_picks_the_last_row_at_or_below():
    releases = ("0.25.1", "1.16.0", "1.7.1")
    assert tuple(facts_for(Version(release)).since for release in releases) == ("0.23", "1.8", "1.7")
