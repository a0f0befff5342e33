"""The sweep's report: one row per release (statuses grouped), the drift by exact release, and
the output folder (`--out`, default out/sweep) that holds them.

    <out>/observations/trl-<release>.json   input of `python -m policyload.drift --by-release`
    <out>/releases.json                     one row per release
    <out>/logs/trl-<release>.txt            the end of pytest's output where a release did not pass
    <out>/report.md                         `history()`, also docs/trl-releases.md's block (`record`)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.version import Version

from .. import drift
from .row import Row

if TYPE_CHECKING:
    from .runs import Sweeper


def with_skipped(results: list[dict], index: list[str], sweeper: Sweeper) -> list[dict]:
    """`results` and a row for every final release between them that this run left out
    (`--releases`): its recorded result if there is one, else "not swept", so the drift report
    never attributes a change across releases it did not look at to the later one."""
    if not results:
        return results
    swept = {result["row"]["trl"]: result for result in results}
    oldest, newest = min(map(Version, swept)), max(map(Version, swept))
    between = [release for release in index if oldest <= Version(release) <= newest and release not in swept]
    for release in between:
        swept[release] = sweeper.cached(release) or {"row": asdict(Row(release, "not swept")), "observations": None}
    return sorted(swept.values(), key=lambda result: Version(result["row"]["trl"]))


def status_table(rows: list[dict]) -> str:
    """Consecutive releases with the same transformers and status share a line."""
    groups: list[list[dict]] = []
    for row in rows:
        last = groups[-1][-1] if groups else None
        if last and (last["transformers"], last["status"]) == (row["transformers"], row["status"]):
            groups[-1].append(row)
        else:
            groups.append([row])
    lines = ["| TRL | transformers | status |", "|---|---|---|"]
    for group in groups:
        releases = ", ".join(row["trl"] for row in group)
        lines.append(f"| {releases} | {group[0]['transformers'] or '-'} | {group[0]['status']} |")
    return "\n".join(lines)


def runs_of(results: list[dict]) -> tuple[list[dict], list[str]]:
    """The drift report's input (releases with observations) and the releases without them."""
    runs = [
        {"trl": r["row"]["trl"], "transformers": r["row"]["transformers"], "observations": r["observations"]}
        for r in results
        if r["observations"]
    ]
    return runs, [r["row"]["trl"] for r in results if not r["observations"]]


def history(results: list[dict]) -> str:
    """The block of the TRL release history page: which releases were swept, and every change at
    the release it appears in."""
    runs, unobserved = runs_of(results)
    rows = [result["row"] for result in results]
    return (
        f"TRL {rows[0]['trl']} to {rows[-1]['trl']}: {len(rows)} final releases, {len(runs)} observed "
        f"(`python -m policyload.sweep`).\n\n{status_table(rows)}\n\n"
        f"{drift.by_release_table(runs, unobserved)}\n"
    )


def write_outputs(results: list[dict], out: Path) -> str:
    """Replace `out`'s observations, rows, logs and report with this run's; return the report."""
    (out / "observations").mkdir(parents=True, exist_ok=True)
    for stale in (out / "observations").glob("trl-*.json"):
        stale.unlink()
    runs, _ = runs_of(results)
    for run in runs:
        (out / "observations" / f"trl-{run['trl']}.json").write_text(json.dumps(run, indent=1, sort_keys=True))
    (out / "releases.json").write_text(json.dumps([r["row"] for r in results], indent=1))
    shutil.rmtree(out / "logs", ignore_errors=True)
    for result in results:
        if result.get("log_tail"):
            (out / "logs").mkdir(exist_ok=True)
            (out / "logs" / f"trl-{result['row']['trl']}.txt").write_text(result["log_tail"] + "\n")
    report = f"# TRL release sweep\n\n{history(results)}"
    (out / "report.md").write_text(report)
    return report
