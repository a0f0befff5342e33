"""The front door and the site: README.md's findings equal to their generators
(conformance/front_door.py), the README short with its links landing on pages of the site, and
the site's pages all in its navigation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from conformance import front_door

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_findings_are_what_the_generators_print_from_the_committed_records():
    text = README.read_text()

    assert front_door.with_blocks(text) == text, "README.md's findings are stale: python -m conformance.front_door"


def test_a_stale_block_is_found_and_rewritten(tmp_path, monkeypatch):
    stale = README.read_text().replace("| 0.27.0 | `dtype` | None -> 'float32' | 5 |", "| 0.29.0 | `dtype` | x | 9 |")
    assert stale != README.read_text()
    copy = tmp_path / "README.md"
    copy.write_text(stale)
    monkeypatch.setattr(front_door, "README", copy)

    assert front_door.main(["--check"]) == 1
    assert copy.read_text() == stale  # --check writes nothing
    assert front_door.main([]) == 0
    assert copy.read_text() == README.read_text()


def test_a_missing_block_is_an_error_naming_it():
    text = README.read_text().replace(front_door.begin("planners"), "")

    with pytest.raises(ValueError, match="front-door:planners"):
        front_door.with_blocks(text)


def test_trl_changes_counts_every_case_of_a_release():
    lines = front_door.trl_changes().splitlines()
    rows = {tuple(cell.strip() for cell in line.split("|")[1:4]): line for line in lines}
    storage = rows[("0.26.0", "`quantization_config.bnb_4bit_quant_storage`", "12 different value changes")]
    # The 12 storage changes of the sweep's table (docs/trl-releases.md): nine of 12 cases, three of 24.
    assert storage.endswith(f"| {9 * 12 + 3 * 24} |")
    # 1.8.0: {'': 0}, {'': 1} and no device map each became 'auto', 85 cases each.
    assert rows[("1.8.0", "`device_map`", "3 different value changes")].endswith(f"| {3 * 85} |")


def test_the_readme_s_reading_of_the_trl_table_is_what_the_table_says():
    """The sentence under the table names three changes by release: each must be a row of it."""
    rows = {tuple(cell.strip() for cell in line.split("|")[1:4]) for line in front_door.trl_changes().splitlines()}
    text = " ".join(README.read_text().split())

    assert "since TRL 0.27 a DPO run that names no dtype loads in float32" in text
    assert ("0.27.0", "`dtype`", "None -> 'float32'") in rows
    assert "TRL 1.5 to 1.9 pass `device_map=\"auto\"`" in text
    assert ("1.5.0", "`device_map`", "'<absent>' -> 'auto'") in rows
    assert ("1.10.0", "`device_map`", "'auto' -> '<absent>'") in rows


def test_planner_rows_contain_a_case_worked_out_by_hand():
    # qwen2-0.5b bf16 unquantized, read off the committed run: predicted 988065792, measured 990760960 bytes.
    by_hand = 988065792 / 990760960 - 1  # -0.27%
    row = next(line for line in front_door.planners().splitlines() if "resident memory" in line)
    low, high = (float(value) / 100 for value in re.findall(r"([+-]\d+\.\d)%", row))
    assert low <= round(by_hand, 3) <= high
    assert "| 6 |" in row  # bf16, float16, float32, 8-bit, 4-bit nf4, nested nf4


def test_readme_is_a_front_door_under_200_lines_whose_links_land_on_pages_of_the_site():
    text = README.read_text()
    links = re.findall(r"\]\((docs/[^)#]+)", text)

    assert len(text.splitlines()) <= 200
    assert links and [link for link in links if not (ROOT / link).is_file()] == []


def test_every_page_of_the_site_is_in_its_navigation():
    config = YAML(typ="safe").load((ROOT / "mkdocs.yml").read_text())

    def pages(nav):
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            yield from pages(value) if isinstance(value, list) else [value]

    in_nav = set(pages(config["nav"]))
    on_disk = {path.relative_to(ROOT / "docs").as_posix() for path in (ROOT / "docs").rglob("*.md")}
    assert on_disk - in_nav == set() and in_nav - on_disk == set()


def tables(markdown: str) -> list[str]:
    """The markdown tables of a text, each as its lines joined."""
    found, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            found.append("\n".join(current))
            current = []
    return found


@pytest.mark.parametrize("run, generator", [
    ("qwen2-0.5b-cpu.json.gz", "markdown_table"),
    ("qwen2-0.5b-dpo-cpu.json.gz", "dpo_table"),
])
def test_memory_page_tables_are_what_the_report_prints_from_the_committed_runs(run, generator):
    from policyload.report import dpo as dpo_module
    from policyload.report import load_run
    from policyload.report import tables as tables_module

    generate = getattr(tables_module, generator, None) or getattr(dpo_module, generator)
    printed = tables(generate(load_run(front_door.RESULTS / run)))
    page = tables((ROOT / "docs" / "memory.md").read_text())

    assert printed and [table for table in printed if table not in page] == []


def test_training_step_page_tables_are_the_report_of_the_recorded_run_replanned():
    """The measured training-step page shows what `report.train` prints for the committed real-size
    run, its planned columns re-computed by today's planner (`check_train_step.replan`): a planner
    change that moves a figure makes this page stale."""
    from benchmarks.check_train_step import replan
    from policyload.report import load_run
    from policyload.report.train import train_table

    run = load_run(front_door.RESULTS / "qwen2-0.5b-train-cpu.json.gz")
    replan(run)
    printed = tables(train_table(run))
    page = tables((ROOT / "docs" / "training-step-measured.md").read_text())

    assert len(printed) == 2 and [table for table in printed if table not in page] == []
