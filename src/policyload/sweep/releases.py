"""Which TRL releases the sweep covers, and which transformers each one may get.

The releases are the final ones (no pre-, dev- or post-release) on the index since `SINCE`.
TRL caps transformers only loosely, so `KNOWN_BREAKS` caps it further where a newer
transformers is known to break a TRL range; the environment steps down from there while the
recipe does not import (`environments`).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from .errors import SweepError

#: The oldest release swept: the first with `ModelConfig.dtype` (the suite describes 0.22 onwards).
SINCE = "0.23"


@dataclass(frozen=True)
class Break:
    """A transformers release range that breaks a TRL release range although TRL's own
    requirements allow it (TRL caps transformers only loosely)."""

    trl: str
    transformers: str
    reason: str


KNOWN_BREAKS = (
    Break(
        ">=0.23,<0.29",
        "<5.3",
        "transformers >= 5.3: `import trl.scripts.dpo` fails (`_is_package_available` returns a tuple there)",
    ),
)


def final_releases(versions: Iterable[str], since: str = SINCE) -> list[str]:
    """The final releases (no pre-, dev- or post-release) at or above `since`, oldest first."""
    kept = []
    for text in versions:
        try:
            version = Version(text)
        except InvalidVersion:
            continue
        if not (version.is_prerelease or version.is_devrelease or version.is_postrelease) and version >= Version(since):
            kept.append(version)
    return [str(version) for version in sorted(set(kept))]


def index_versions(package: str = "trl") -> list[str]:
    """Every version of `package` on the index pip is configured with (`pip index versions`)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", package, "--pre"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    match = re.search(r"^Available versions: (.*)$", result.stdout, flags=re.MULTILINE)
    if result.returncode or not match:
        raise SweepError(f"pip index versions {package} failed: {(result.stderr or result.stdout).strip()[-500:]}")
    return [version.strip() for version in match.group(1).split(",")]


def known_breaks(release: str) -> list[Break]:
    """The caps on transformers that apply to `release` (part of its environment's install key)."""
    return [b for b in KNOWN_BREAKS if Version(release) in SpecifierSet(b.trl)]
