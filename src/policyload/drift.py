"""What changes in the policy load when you upgrade TRL: a markdown table for an upgrade review.

Input: the observation files the conformance suite writes with `--observations PATH`, one per
TRL release (`tox -m trl-matrix` writes them to out/observations/). For each pair of
consecutive releases, every recipe case whose `from_pretrained` keywords differ is listed,
grouped by cause. Built only from what the runs observed; nothing here knows TRL's history.

    python -m policyload.drift out/observations
    python -m policyload.drift --by-release out/sweep/observations   # every release: python -m policyload.sweep
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

from packaging.version import Version

from .cases import DTYPE_TOKENS

#: How a keyword that was not passed is spelled where two sets of keywords are compared (this
#: table, the conformance suite's failure messages and its per-rank results).
ABSENT = "<absent>"


class DriftError(Exception):
    """The input cannot make a drift report; `main()` prints it as `error: ...` and exits 2."""


#: The models of a DPO-plan observation (`conformance/test_dpo_plan.py`), whose fields it keys as
#: `<role>.<field>` (`reference.kwargs.dtype`, `adapter.dtype`).
ROLES = ("policy", "reference", "adapter")


def cause(keyword: str, case_id: str) -> str:
    """Name the cause of a difference by the keyword that changed and the case it changed in: a
    change to the reference or the adapter is that model's; a policy keyword is read as a recipe's."""
    role, _, rest = keyword.partition(".")
    if role in ("reference", "adapter"):
        return role
    if role == "policy" and rest.startswith("kwargs."):
        return cause(rest.removeprefix("kwargs."), case_id)
    if keyword == "error":
        return "crash"
    if keyword == "quantization_config.bnb_4bit_quant_storage":
        return "quant storage"
    if keyword == "dtype":
        # A case that names no dtype (the `defaults` case, the other-field cases) sees the default.
        explicit = case_id.split("-")[0] in DTYPE_TOKENS.values()
        return "dtype mapping" if explicit else "defaults"
    if keyword in ("device_map", "trust_remote_code"):
        return keyword
    return f"other ({keyword})"


def flatten(kwargs) -> dict:
    """`quantization_config` spelled out as `quantization_config.<field>` keys, so that a
    difference names the field that changed; an error outcome is the keyword `error`."""
    if not isinstance(kwargs, dict):
        return {"value": kwargs}
    flat = {key: value for key, value in kwargs.items() if key != "quantization_config"}
    for field, value in (kwargs.get("quantization_config") or {}).items():
        flat[f"quantization_config.{field}"] = value
    return flat


def whole_roles(old: dict, new: dict) -> tuple[dict, dict]:
    """A model loaded in one run and not in the other is one change (`reference`: 'disk' ->
    '<absent>'), not one per field: its fields are replaced by the role, valued by its source."""
    old, new = dict(old), dict(new)
    for role in ROLES:
        fields = [{key for key in run if key.startswith(role + ".")} for run in (old, new)]
        if bool(fields[0]) != bool(fields[1]):
            for run, keys in zip((old, new), fields, strict=True):
                if keys:
                    run[role] = run.get(f"{role}.source", "loaded")
                    for key in keys:
                        del run[key]
    return old, new


def differences(before: dict, after: dict) -> list[tuple[str, str, object, object]]:
    """(case id, keyword, before, after) for every keyword that differs between two runs."""
    rows = []
    for case_id in sorted(set(before) & set(after)):
        old, new = whole_roles(flatten(before[case_id]), flatten(after[case_id]))
        for keyword in sorted(set(old) | set(new)):
            was, now = old.get(keyword, ABSENT), new.get(keyword, ABSENT)
            if was != now:
                rows.append((case_id, keyword, was, now))
    return rows


def read_run(path: Path) -> dict:
    try:
        run = json.loads(path.read_text())
        return {"trl": run["trl"], "transformers": run.get("transformers"), "observations": run["observations"]}
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = f"{type(error).__name__}: {error}"
        raise DriftError(f"policyload.drift: {path} is not an observation file ({reason})") from error


def changed_cases(old: dict, new: dict) -> dict[tuple[str, str], dict[str, list[str]]]:
    """(cause, keyword) -> {"before -> after": the case ids} for everything that differs between
    two runs, sorted by cause and keyword."""
    grouped = defaultdict(lambda: defaultdict(list))
    for case_id, keyword, before, after in differences(old["observations"], new["observations"]):
        grouped[(cause(keyword, case_id), keyword)][f"{before!r} -> {after!r}"].append(case_id)
    return {key: dict(changes) for key, changes in sorted(grouped.items())}


def grouped_changes(old: dict, new: dict) -> list[tuple[str, str, str, str]]:
    """(cause, keyword, summary, examples) for every cause x keyword that differs between two runs:
    each value change with its case count, and up to three example cases."""
    rows = []
    for (why, keyword), changes in changed_cases(old, new).items():
        summary = "<br>".join(f"{change} ({len(ids)})" for change, ids in sorted(changes.items()))
        examples = ", ".join(f"`{ids[0]}`" for ids in list(changes.values())[:3])
        rows.append((why, keyword, summary, examples))
    return rows


def drift_table(runs: list[dict]) -> str:
    """One row per TRL upgrade x cause x keyword: each value change with its case count, and examples."""
    runs = sorted(runs, key=lambda run: Version(run["trl"]))
    lines = ["| TRL upgrade | cause | keyword | before -> after (cases) | examples |", "|---|---|---|---|---|"]
    for old, new in pairwise(runs):
        upgrade = f"{old['trl']} -> {new['trl']}"
        changes = grouped_changes(old, new)
        if not changes:
            lines.append(f"| {upgrade} | no change | | | |")
        for why, keyword, summary, examples in changes:
            lines.append(f"| {upgrade} | {why} | `{keyword}` | {summary} | {examples} |")
    return "\n".join(lines)


def first_release(old: dict, new: dict, unobserved=()) -> str:
    """Where a change between two consecutive observed runs first appears: `new` itself, unless
    releases between them were not observed (then the first of those to `new`); a transformers
    change between the two is named too, as the other possible cause."""
    gap = sorted((v for v in unobserved if Version(old["trl"]) < Version(v) < Version(new["trl"])), key=Version)
    release = f"{gap[0]} to {new['trl']} ({', '.join(gap)} not observed)" if gap else new["trl"]
    if old.get("transformers") and new.get("transformers") and old["transformers"] != new["transformers"]:
        release += f" (transformers {old['transformers']} -> {new['transformers']})"
    return release


def by_release_table(runs: list[dict], unobserved=()) -> str:
    """The drift of consecutive releases, each change under the release where it first appears:
    with every release observed (`python -m policyload.sweep`), that is the exact release.
    Releases without a change have no row; `unobserved` lists releases with no observations."""
    runs = sorted(runs, key=lambda run: Version(run["trl"]))
    lines = ["| first in TRL | cause | keyword | before -> after (cases) | examples |", "|---|---|---|---|---|"]
    for old, new in pairwise(runs):
        release = first_release(old, new, unobserved)
        for why, keyword, summary, examples in grouped_changes(old, new):
            lines.append(f"| {release} | {why} | `{keyword}` | {summary} | {examples} |")
    return "\n".join(lines)


#: What a user who ran `tox -e drift` on a fresh clone needs to hear.
WHERE_OBSERVATIONS_COME_FROM = (
    "run `tox -m trl-matrix` first (each release's environment writes out/observations/<env>.json), "
    "or `pytest conformance --observations PATH` per TRL release"
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m policyload.drift", description=__doc__.splitlines()[0])
    parser.add_argument(
        "observations", nargs="+", type=Path, help="observation files (or folders of them), one per TRL release"
    )
    parser.add_argument(
        "--by-release",
        action="store_true",
        help="each change under the release where it first appears (for consecutive releases: the sweep's output)",
    )
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.observations if not path.exists()]
    if missing:
        parser.error(f"{', '.join(missing)}: not found; {WHERE_OBSERVATIONS_COME_FROM}")
    paths = [p for path in args.observations for p in (sorted(path.glob("*.json")) if path.is_dir() else [path])]
    if len(paths) < 2:
        parser.error(
            f"need the observations of at least two TRL releases; got {[str(p) for p in paths]}; "
            + WHERE_OBSERVATIONS_COME_FROM
        )
    try:
        runs = [read_run(path) for path in paths]
        print(by_release_table(runs) if args.by_release else drift_table(runs))
    except DriftError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
