"""The mutation harness itself (`conformance/mutation`): the list cannot rot, a mutant is applied
to a temporary copy only, and the score and exit status follow what the child runs report.
The mutants' own runs are `tox -e mutation`; here only a tiny selection runs, three times."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from conformance import mutation  # the repository root is on sys.path: the root conftest.py
from conformance.mutation import HarnessError, Mutant, check_snippet, load_mutants, main, mutated_copy

PUBLIC = {
    "LoadSpec",
    "LoadSpec.from_model_config",
    "Topology",
    "Topology.detect",
    "build_quantization_config",
    "kbit_device_map",
    "build_model_kwargs",
    "load_policy",
}


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def test_the_list_is_current_and_covers_every_public_function():
    listed = load_mutants()
    assert len(listed.mutants) >= 30
    assert len({(m.file, m.old, m.new) for m in listed.mutants}) == len(listed.mutants)  # distinct faults
    for mutant in [*listed.mutants, *listed.equivalents]:
        check_snippet(mutant)  # raises if the reference changed under the list
    assert {m.target for m in listed.mutants} >= PUBLIC
    assert all(e.reason.strip() for e in listed.equivalents)


def test_a_mutant_is_applied_to_a_copy_and_the_source_is_untouched():
    mutant = next(m for m in load_mutants().mutants if m.id == "dm-ignores-rank")
    before = tree_digest(mutation.SOURCE_ROOT)
    with mutated_copy(mutant) as copy:
        text = (copy / "policyload" / mutant.file).read_text()
        assert mutant.new in text and mutant.old not in text
        assert mutation.imported_from(copy) == copy / "policyload" / "__init__.py"
        unchanged = tree_digest(copy)
        unchanged.pop(mutant.file if "/" in mutant.file else f"policyload/{mutant.file}")
        assert all(before[name] == digest for name, digest in unchanged.items())
    assert not copy.exists()
    assert tree_digest(mutation.SOURCE_ROOT) == before


def test_a_crash_inside_the_copy_leaves_nothing_behind():
    mutant = load_mutants().mutants[0]
    before = tree_digest(mutation.SOURCE_ROOT)
    with pytest.raises(RuntimeError), mutated_copy(mutant) as copy:
        raise RuntimeError("child crashed")
    assert not copy.exists() and tree_digest(mutation.SOURCE_ROOT) == before


def test_a_stale_snippet_is_refused():
    stale = Mutant("stale", "kwargs.py", "return {'': rank}", "return {}", "gone", "kbit_device_map", "x")
    with pytest.raises(HarnessError, match="does not occur"):
        check_snippet(stale)
    twice = Mutant("twice", "kwargs.py", "spec.", "self.", "ambiguous", "kbit_device_map", "x")
    with pytest.raises(HarnessError, match="occurs .* times"):
        check_snippet(twice)
    with pytest.raises(HarnessError), mutated_copy(stale):
        pass


def write_list(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "mutants.toml"
    path.write_text('[selection.s]\nargs = ["tests/test_spec.py", "-k", "bad_input"]\n' + body)
    return path


def mutant_entry(id: str, old: str, new: str, selection: str = "s", file: str = "spec.py") -> str:
    return (
        f"[[mutant]]\nid = {id!r}\nfile = {file!r}\nold = '''{old}'''\nnew = '''{new}'''\n"
        f"description = 'd'\ntarget = 'LoadSpec'\nselection = {selection!r}\n"
    )


def test_a_stale_list_exits_2_before_running_anything(tmp_path, capsys):
    path = write_list(tmp_path, mutant_entry("gone", "this text is not in spec.py", "x"))
    assert main(["--mutants", str(path)]) == 2
    assert "'gone': its `old` snippet does not occur in policyload/spec.py" in capsys.readouterr().err


@pytest.mark.parametrize(
    "body, message",
    [
        (mutant_entry("a", "if unknown:", "if False:") * 2, "duplicate ids ['a']"),
        (mutant_entry("a", "if unknown:", "if False:", selection="nope"), "unknown selection 'nope'"),
        (mutant_entry("a", "if unknown:", "if unknown:"), "`new` is the same as `old`"),
        ("[[mutant]]\nid = 'a'\n", "missing ["),
    ],
)
def test_bad_lists_are_refused(tmp_path, body, message):
    with pytest.raises(HarnessError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_mutants(write_list(tmp_path, body))


def test_first_failure_reads_the_short_summary():
    output = "..F\n=== short test summary info ===\nFAILED tests/test_x.py::test_y[a-b] - AssertionError\n"
    assert mutation.first_failure(output) == "tests/test_x.py::test_y[a-b]"
    assert mutation.first_failure("ERROR conformance/test_z.py - ImportError\n") == "conformance/test_z.py"
    spaced = "FAILED tests/test_spec.py::test_bad[fields6-LoadSpec.x='' is not accepted] - Failed: DID NOT RAISE"
    assert mutation.first_failure(spaced) == "tests/test_spec.py::test_bad[fields6-LoadSpec.x='' is not accepted]"


def test_score_survivors_and_exit_status(tmp_path, capsys):
    """One mutant the selection kills, one it cannot see: score 1/2, the survivor named, exit 1."""
    killed = mutant_entry("empty-path", "if not isinstance(value, str) or not value:", "if not isinstance(value, str):")
    survivor = mutant_entry("unknown-overrides", "if unknown:", "if False:")
    path = write_list(tmp_path, killed + survivor)
    assert main(["--mutants", str(path), "--json", str(tmp_path / "out" / "mutation.json")]) == 1
    out = capsys.readouterr().out
    assert "KILLED   empty-path" in out and "by tests/test_spec.py::test_bad_input_names_field_value" in out
    assert "mutation score: 1/2 killed" in out
    assert "survivors (1):\n  unknown-overrides: d" in out
    assert '"score": "1/2"' in (tmp_path / "out" / "mutation.json").read_text()
