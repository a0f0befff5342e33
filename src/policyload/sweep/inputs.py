"""What decides a release's result, and the hashes that key everything cached on it.

Two keys, one hash function (`digest`): the suite hash names the results folder, so a changed
suite, fixture, reference module or pin re-runs every release; the install key is stored with
each environment and each result, so a changed pin, package list, known break or Python
rebuilds the environment and discards the result. Nothing else in the project hashes the suite.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from .releases import known_breaks

ROOT = Path(__file__).resolve().parents[3]
#: The test modules that observe TRL's behaviour, not transformers' (loading, placement and the
#: distributed run are left to the matrix: slow, and about transformers and the hardware).
#: Patterns: a level the suite does not have (yet) is simply not run.
LEVEL_FILES = (
    "test_quantization.py",
    "test_device_map.py",
    "test_recipe.py",
    "test_release_facts.py",
    "test_reference*.py",
)
#: What every environment gets besides TRL and transformers (`pyproject.toml`'s test extra,
#: policyload's own dependencies); the versions come from the constraint files.
PACKAGES = ("torch", "accelerate", "bitsandbytes", "datasets", "pytest", "hypothesis", "psutil", "packaging")
CONSTRAINTS = ("constraints/base.txt", "constraints/torch-cpu.txt")


def digest(paths: Iterable[Path], *extra: str, root: Path = ROOT) -> str:
    """Twelve hex digits of sha256 over `extra` and each file's path (relative to `root`) and bytes,
    in path order: a renamed file changes the key as a changed one does."""
    hasher = hashlib.sha256()
    for text in extra:
        hasher.update(text.encode())
    for path in sorted(paths):
        hasher.update(str(path.relative_to(root)).encode())
        hasher.update(path.read_bytes())
    return hasher.hexdigest()[:12]


def suite_hash(root: Path = ROOT) -> str:
    """What decides a release's outcome besides TRL and transformers: the suite (conformance/:
    tests, divergences, release facts), its fixtures, the reference (src/policyload, the sweep and
    the drift report excepted: they only read results) and the pins."""
    reference = root / "src" / "policyload"
    files = [
        *root.glob("conformance/*.py"),
        *root.glob("conformance/*.toml"),
        *root.glob("fixtures/*.py"),
        root / "conftest.py",
        *(p for p in reference.glob("**/*.py") if p.name != "drift.py" and reference / "sweep" not in p.parents),
        *(root / name for name in CONSTRAINTS),
    ]
    return digest((p for p in files if p.is_file()), json.dumps(LEVEL_FILES), root=root)


def install_key(release: str, python: str) -> str:
    """What decides an environment's contents: the release, its known breaks, the pins, Python."""
    breaks = [asdict(b) for b in known_breaks(release)]
    return digest((ROOT / name for name in CONSTRAINTS), release, python, json.dumps([PACKAGES, breaks]))
