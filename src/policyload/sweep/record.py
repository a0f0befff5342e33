"""The committed sweep (conformance/sweep/, written by `--record`) and the block of the TRL release
history page (docs/trl-releases.md) generated from it (`--docs`): the project's TRL history is
checked in, so the page can be regenerated and tested for staleness without re-running a sweep.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from packaging.version import Version

from .errors import SweepError
from .inputs import ROOT

#: The committed sweep, and the documentation page whose block is generated from it.
RECORD = ROOT / "conformance" / "sweep"
PAGE = ROOT / "docs" / "trl-releases.md"
BEGIN, END = "<!-- sweep:begin (python -m policyload.sweep --docs) -->", "<!-- sweep:end -->"


def save_record(results: list[dict], folder: Path) -> None:
    """The committed copy (gzip without timestamps, so identical data is identical bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.json.gz"):
        stale.unlink()
    for result in results:
        # Timings left out: a re-run that observed the same rewrites the same bytes.
        row = {key: value for key, value in result["row"].items() if key not in ("seconds", "phases")}
        data = {"row": row, "observations": result["observations"]}
        text = json.dumps(data, indent=0, sort_keys=True).encode()
        (folder / f"trl-{result['row']['trl']}.json.gz").write_bytes(gzip.compress(text, mtime=0))


def load_record(folder: Path) -> list[dict]:
    """The committed results, oldest release first."""
    results = [json.loads(gzip.decompress(path.read_bytes())) for path in folder.glob("*.json.gz")]
    return sorted(results, key=lambda result: Version(result["row"]["trl"]))


def page_with(history_text: str, page: str) -> str:
    """`page` with the text between `BEGIN` and `END` replaced by `history_text`, nothing else."""
    if BEGIN not in page or END not in page:
        raise SweepError(f"{PAGE.name} has no {BEGIN} ... {END} block")
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{history_text}{END}{tail}"
