"""What changes in the policy load when you upgrade TRL: a markdown table for an upgrade review.

Input: the observation files the conformance suite writes with `--observations PATH`, one per
TRL release (`tox -m trl-matrix` writes them to out/observations/). For each pair of
consecutive releases, every recipe case whose `from_pretrained` keywords differ is listed,
grouped by cause. Built only from what the runs observed; nothing here knows TRL's history.

    python -m policyload.drift out/observations/*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from packaging.version import Version


def cause(keyword: str, case_id: str) -> str:
    """Name the cause of a difference by the keyword that changed and the case it changed in."""
    if keyword == "error":
        return "crash"
    if keyword == "quantization_config.bnb_4bit_quant_storage":
        return "quant storage"
    if keyword == "dtype":
        # A case that names no dtype (the `defaults` case, the other-field cases) sees the default.
        explicit = case_id.split("-")[0] in ("nodtype", "auto", "fp32", "fp16", "bf16")
        return "dtype mapping" if explicit else "defaults"
    if keyword in ("device_map", "trust_remote_code"):
        return keyword
    return f"other ({keyword})"


def flatten(value, prefix: str = "") -> dict:
    """One level of `quantization_config.*` keys, so a difference names the field that changed."""
    if not isinstance(value, dict):
        return {prefix or "value": value}
    flat = {}
    for key, item in value.items():
        name = f"{prefix}.{key}" if prefix else key
        flat.update(flatten(item, name) if isinstance(item, dict) else {name: item})
    return flat


def differences(before: dict, after: dict) -> list[tuple[str, str, object, object]]:
    """(case id, keyword, before, after) for every keyword that differs between two runs."""
    rows = []
    for case_id in sorted(set(before) & set(after)):
        old, new = flatten(before[case_id]), flatten(after[case_id])
        for keyword in sorted(set(old) | set(new)):
            if old.get(keyword, "<absent>") != new.get(keyword, "<absent>"):
                rows.append((case_id, keyword, old.get(keyword, "<absent>"), new.get(keyword, "<absent>")))
    return rows


def read_run(path: Path) -> dict:
    try:
        run = json.loads(path.read_text())
        return {"trl": run["trl"], "observations": run["observations"]}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"policyload.drift: {path} is not an observation file ({type(error).__name__}: {error})")


def drift_table(runs: list[dict]) -> str:
    runs = sorted(runs, key=lambda run: Version(run["trl"]))
    lines = [
        "| TRL upgrade | cause | keyword | before | after | cases |",
        "|---|---|---|---|---|---|",
    ]
    for old, new in zip(runs, runs[1:]):
        grouped = defaultdict(list)
        for case_id, keyword, before, after in differences(old["observations"], new["observations"]):
            grouped[(cause(keyword, case_id), keyword, repr(before), repr(after))].append(case_id)
        if not grouped:
            lines.append(f"| {old['trl']} -> {new['trl']} | no change | | | | |")
        for (why, keyword, before, after), case_ids in sorted(grouped.items()):
            shown = ", ".join(f"`{case_id}`" for case_id in case_ids[:6])
            more = f" and {len(case_ids) - 6} more" if len(case_ids) > 6 else ""
            lines.append(f"| {old['trl']} -> {new['trl']} | {why} | `{keyword}` | {before} | {after} | {len(case_ids)}: {shown}{more} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m policyload.drift", description=__doc__.splitlines()[0])
    parser.add_argument("observations", nargs="+", type=Path, help="observation files, one per TRL release")
    args = parser.parse_args(argv)
    if len(args.observations) < 2:
        parser.error("need the observations of at least two TRL releases")
    print(drift_table([read_run(path) for path in args.observations]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
