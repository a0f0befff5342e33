"""The compatibility table (conformance/compatibility.py): cells, order, the staleness check, and
the table of docs/implementations.md equal to what the generator prints from the committed
recordings (the README's short one: tests/test_docs_tables.py)."""

import json
import re
from pathlib import Path

from conformance.compatibility import RECORDED, cell, check, read, table

ROOT = Path(__file__).resolve().parents[1]


def record(name: str, quantization: dict, trl: str = "1.16.0") -> dict:
    levels = {"quantization": quantization, "device-map": {"not_observed": True}}
    levels |= {"recipe": {"no_function": "why"}, "dpo-plan": {"no_function": "why"}}
    return {"implementation": name, "description": f"{name} 1.0", "trl": trl, "transformers": "5", "levels": levels}


def test_a_cell_counts_the_differing_cases_and_spells_the_first_by_case_id():
    cases = {"b-case": "k: impl 1, TRL 2", "a-case": None, "c-case": "k: impl 3, TRL 4"}
    # 3 cases, 2 differ; the first differing case id in sorted order is "b-case"
    assert cell({"cases": cases}) == "differs in 2 of 3 cases; first `b-case`: k: impl 1, TRL 2"
    assert cell({"cases": {"a": None, "b": None}}) == "agrees (2 of 2 cases)"
    assert cell({"no_function": "why"}) == "no function"
    assert cell({"not_observed": True}) == "not observed"


def test_a_long_or_piped_difference_is_cut_and_escaped():
    assert cell({"cases": {"x": "a|b"}}) == "differs in 1 of 1 cases; first `x`: a\\|b"
    long = cell({"cases": {"x": "y" * 200}})
    assert long == "differs in 1 of 1 cases; first `x`: " + "y" * 137 + "..."


def test_table_lists_the_reference_first_then_by_name():
    records = [record(name, {"cases": {"a": None}}) for name in ("zeta", "reference", "alpha")]
    rows = [line.split(" | ")[0] for line in table(records).splitlines()[2:]]
    assert rows == ["| reference (reference 1.0)", "| alpha (alpha 1.0)", "| zeta (zeta 1.0)"]


def test_check_refuses_a_fresh_recording_unlike_the_committed_one(tmp_path):
    committed, fresh = tmp_path / "committed", tmp_path / "fresh.json"
    committed.mkdir()
    before = record("impl", {"cases": {"a": None, "b": "x"}})
    (committed / "impl.json").write_text(json.dumps(before))
    fresh.write_text(json.dumps(before))
    assert check(fresh, committed) == []
    fresh.write_text(json.dumps(record("impl", {"cases": {"a": "now differs", "b": "x"}})))
    assert check(fresh, committed) == ["quantization: 1 cases changed, e.g. ['a'] (or its kind of entry changed)"]
    fresh.write_text(json.dumps(record("impl", {"cases": {"a": None, "b": "x"}}, trl="1.17.0")))
    assert check(fresh, committed) == ["trl: recorded '1.16.0', now '1.17.0'"]
    fresh.write_text(json.dumps(record("other", {"cases": {}})))
    assert check(fresh, committed) == [f"{committed / 'other.json'} does not exist; commit {fresh} there"]


def test_the_committed_recordings_cover_the_reference_and_every_other_implementation():
    names = sorted(r["implementation"] for r in read(RECORDED))
    assert names == ["alignment-handbook", "axolotl", "llamafactory", "ms-swift", "oumi", "reference"]


def test_docs_table_is_what_the_generator_prints_from_the_committed_recordings():
    page = (ROOT / "docs" / "implementations.md").read_text()
    (printed,) = re.findall(r"^\| implementation \|.*?\n(?=[^|])", page, flags=re.MULTILINE | re.DOTALL)
    assert printed == table(read(RECORDED))
