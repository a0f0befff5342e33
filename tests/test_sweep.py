"""The TRL release sweep: which releases, what invalidates a recorded result, resuming, the
by-release drift report, and the docs page's block generated from the committed record."""

import json
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from policyload import drift, sweep
from policyload.drift import by_release_table


def test_final_releases_since_023_oldest_first_without_pre_dev_or_post_releases():
    index = ["1.16.0", "1.17.0rc1", "0.22.2", "0.23.0", "1.0.0.dev1", "0.27.0", "0.23.1", "0.27.0.post1", "junk"]

    assert sweep.final_releases(index) == ["0.23.0", "0.23.1", "0.27.0", "1.16.0"]


def test_transformers_cap_applies_to_the_releases_it_breaks():
    releases = ("0.25.1", "0.28.0", "1.4.0")
    capped = {release: [b.transformers for b in sweep.known_breaks(release)] for release in releases}

    assert capped == {"0.25.1": ["<5.3"], "0.28.0": ["<5.3"], "1.4.0": []}


def test_junit_counts(tmp_path):
    (tmp_path / "junit.xml").write_text(
        '<testsuites><testsuite tests="5" failures="1" errors="1" skipped="1">'
        '<testcase classname="a" name="ok"/><testcase classname="a" name="bad"><failure/></testcase>'
        '<testcase classname="b" name="broken"><error/></testcase></testsuite></testsuites>'
    )

    assert sweep.junit_counts(tmp_path / "junit.xml") == {
        "passed": 2, "failed": 2, "skipped": 1, "failures": ["a::bad", "b::broken"],
    }  # fmt: skip


def run(trl, transformers="5.2.0", **observations):
    return {"trl": trl, "transformers": transformers, "observations": observations}


def test_by_release_names_the_release_a_change_first_appears_in():
    runs = [
        run("0.26.2", defaults={"dtype": None}),
        run("0.27.0", defaults={"dtype": "float32"}),
        run("0.27.1", defaults={"dtype": "float32"}),
    ]

    assert by_release_table(runs).splitlines()[2:] == [
        "| 0.27.0 | defaults | `dtype` | None -> 'float32' (1) | `defaults` |"
    ]


def test_by_release_says_when_releases_between_were_not_observed_or_transformers_changed():
    runs = [run("1.4.0", defaults={}), run("1.7.1", "5.24.0", defaults={"device_map": "auto"})]

    (row,) = by_release_table(runs, unobserved=["1.5.0", "1.6.0", "2.0.0"]).splitlines()[2:]

    assert row.startswith(
        "| 1.5.0 to 1.7.1 (1.5.0, 1.6.0 not observed) (transformers 5.2.0 -> 5.24.0) | device_map | `device_map` |"
    )


def test_drift_cli_by_release(tmp_path, capsys):
    for item in (run("0.26.2", defaults={"dtype": None}), run("0.27.0", defaults={"dtype": "float32"})):
        (tmp_path / f"trl-{item['trl']}.json").write_text(json.dumps(item))

    assert drift.main(["--by-release", str(tmp_path)]) == 0
    assert "| 0.27.0 | defaults | `dtype` |" in capsys.readouterr().out


def result(trl, status="pass", observations=None, key=None):
    row = sweep.Row(trl, status=status, transformers="5.2.0")
    return {"install_key": key, "row": sweep.asdict(row), "observations": observations}


@pytest.fixture
def sweeper(tmp_path, monkeypatch):
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv"))
    return sweep.Sweeper(tmp_path / "cache", tmp_path / "out", sweep.sys.executable)


def record(sweeper, item):
    sweeper.results.mkdir(parents=True, exist_ok=True)
    item["install_key"] = item["install_key"] or sweep.install_key(item["row"]["trl"], sweeper.python_version)
    sweeper.result_path(item["row"]["trl"]).write_text(json.dumps(item))


def test_a_second_run_reuses_recorded_results_and_runs_only_what_is_new(sweeper, monkeypatch):
    record(sweeper, result("1.15.0", observations={"defaults": {}}))
    record(sweeper, result("1.14.0", observations={"defaults": {}}, key="an older environment"))
    ran = []
    monkeypatch.setattr(sweeper, "sweep_release", lambda release: ran.append(release) or result(release))

    results = sweeper.sweep(["1.14.0", "1.15.0", "1.16.0"], jobs=2, log=lambda line: None)

    assert (sorted(ran), [r["row"]["trl"] for r in results]) == (["1.14.0", "1.16.0"], ["1.14.0", "1.15.0", "1.16.0"])


def test_failed_installs_are_rows_reused_unless_retried(sweeper):
    record(sweeper, result("0.24.0", status="install failed: no wheel"))

    assert sweeper.cached("0.24.0")["row"]["status"] == "install failed: no wheel"
    sweeper.retry_failed = True
    assert sweeper.cached("0.24.0") is None


class FakeInstaller:
    """Stands in for uv and the environment's Python: `import trl.scripts.dpo` fails with any
    transformers at or above `breaks_from`; the newest transformers on the index is 5.24.0."""

    def __init__(self, breaks_from):
        self.breaks_from, self.installed, self.commands = Version(breaks_from), None, []

    def __call__(self, command, **kwargs):
        self.commands.append(command)
        text = " ".join(command)
        if command[1] == "venv":
            Path(command[-1]).mkdir(parents=True)
        if " pip install " in f" {text} ":
            (requirement,) = [arg for arg in command if arg.startswith("transformers")]
            allowed = SpecifierSet(requirement.removeprefix("transformers"))
            versions = [v for v in map(Version, ("4.57.6", "5.2.0", "5.23.0", "5.24.0")) if v in allowed]
            if not versions:
                return CompletedProcess(command, 1, "", f"No solution found: {requirement}")
            self.installed = max(versions)
            return CompletedProcess(command, 0, "", "")
        if "trl.scripts.dpo" in text:
            if self.installed >= self.breaks_from:
                return CompletedProcess(command, 1, "", "ImportError: cannot import name 'x'")
            return CompletedProcess(command, 0, json.dumps({"transformers": str(self.installed), "requires": None}), "")
        if "version('transformers')" in text:
            return CompletedProcess(command, 0, f"{self.installed}\n", "")
        return CompletedProcess(command, 0, "", "")


def test_a_transformers_that_breaks_the_import_is_stepped_down_and_recorded(sweeper, tmp_path, monkeypatch):
    fake = FakeInstaller(breaks_from="5.23")
    monkeypatch.setattr(sweep.Sweeper, "uv", ["uv"])
    monkeypatch.setattr(sweeper, "run", fake)
    monkeypatch.setattr(sweeper, "precompile", lambda: None)
    (tmp_path / "env").mkdir()
    row = sweep.Row("1.16.0")

    assert sweeper.install("1.16.0", tmp_path / "env", row)
    assert (row.transformers, row.notes) == (
        "5.2.0",
        [
            "transformers 5.24.0: `import trl.scripts.dpo` failed (ImportError: cannot import name 'x'); "
            "retried with <5.24",
            "transformers 5.23.0: `import trl.scripts.dpo` failed (ImportError: cannot import name 'x'); "
            "retried with <5.23",
        ],
    )


def test_a_release_no_transformers_imports_with_is_an_import_failed_row(sweeper, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep.Sweeper, "uv", ["uv"])
    monkeypatch.setattr(sweeper, "run", FakeInstaller(breaks_from="4.0"))
    monkeypatch.setattr(sweeper, "precompile", lambda: None)
    (tmp_path / "env").mkdir()
    row = sweep.Row("1.16.0")

    assert not sweeper.install("1.16.0", tmp_path / "env", row)
    assert row.status.startswith("import failed")


def test_a_changed_suite_changes_the_results_folder(tmp_path):
    (tmp_path / "conformance").mkdir()
    (tmp_path / "conformance" / "test_recipe.py").write_text("one")
    before = sweep.suite_hash(tmp_path)
    (tmp_path / "conformance" / "test_recipe.py").write_text("two")

    assert sweep.suite_hash(tmp_path) != before


def test_a_release_that_does_not_install_is_a_row_with_its_reason():
    results = [
        result("0.23.0", observations={"defaults": {"dtype": None}}),
        result("0.24.0", status="install failed: no wheel"),
        result("0.25.0", observations={"defaults": {"dtype": "float32"}}),
    ]

    text = sweep.history(results)

    assert "| 0.24.0 | 5.2.0 | install failed: no wheel |" in text
    assert "| 0.24.0 to 0.25.0 (0.24.0 not observed) | defaults |" in text


def test_docs_block_is_replaced_and_nothing_else():
    page = f"intro\n{sweep.BEGIN}\nold\n{sweep.END}\noutro\n"

    assert sweep.page_with("new\n", page) == f"intro\n{sweep.BEGIN}\nnew\n{sweep.END}\noutro\n"


@pytest.mark.skipif(not any(sweep.RECORD.glob("*.json.gz")), reason="no committed sweep record")
def test_docs_history_is_generated_from_the_committed_sweep():
    page = sweep.PAGE.read_text()

    assert page == sweep.page_with(sweep.history(sweep.load_record(sweep.RECORD)), page), (
        "docs/trl-releases.md's TRL history is stale: python -m policyload.sweep --docs"
    )


def test_releases_left_out_by_releases_are_rows_so_no_change_is_attributed_across_them(sweeper):
    results = [result("1.4.0", observations={"defaults": {}}), result("1.7.0", observations={"defaults": {"x": 1}})]
    index = ["1.3.0", "1.4.0", "1.5.0", "1.6.0", "1.7.0", "1.8.0"]

    filled = sweep.with_skipped(results, index, sweeper)

    assert [(r["row"]["trl"], r["row"]["status"]) for r in filled] == [
        ("1.4.0", "pass"), ("1.5.0", "not swept"), ("1.6.0", "not swept"), ("1.7.0", "pass"),
    ]  # fmt: skip
    assert "| 1.5.0 to 1.7.0 (1.5.0, 1.6.0 not observed) |" in sweep.history(filled)
