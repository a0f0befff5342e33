"""One uv-made environment per release under `<cache>/envs/`, created or reused while its install
inputs are unchanged (the key in its `policyload-sweep.json`; anything else is rebuilt).

uv shares one cache across environments, so making 20+ of them is mostly hard links, and
`precompile` compiles what uv unpacks once, so later environments start with the bytecode. The
transformers chosen is the newest one `import trl.scripts.dpo` works with: TRL's own requirement,
capped by `KNOWN_BREAKS`, then stepped down at most `MAX_FALLBACKS` minor releases. The project
is not installed: the suite runs from this tree with `PYTHONPATH=src` (`runs`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.version import Version

from .errors import SweepError, last_line
from .inputs import CONSTRAINTS, PACKAGES, ROOT, install_key
from .releases import known_breaks

if TYPE_CHECKING:
    from .row import Row

#: Step transformers down at most this many minor releases when `import trl.scripts.dpo` fails.
MAX_FALLBACKS = 4
#: Packages whose bytecode each environment writes for itself (see `Environments.precompile`):
#: one version per environment, so compiling all of it would not pay.
LAZY = {"trl"}
#: Run in each environment: does the recipe import, and with what.
PROBE = """
import json, importlib.metadata as m
import trl.scripts.dpo
requires = [r for r in (m.requires("trl") or []) if r.split(";")[0].strip().lower().startswith("transformers")]
print(json.dumps({"transformers": m.version("transformers"), "requires": "; ".join(requires) or None}))
"""


def uv_command() -> list[str]:
    """uv next to this Python (a venv or tox env with uv installed), on PATH, or `python -m uv`."""
    beside = Path(sys.executable).with_name("uv")
    if beside.exists():
        return [str(beside)]
    if shutil.which("uv"):
        return [shutil.which("uv")]
    try:
        import uv  # noqa: F401
    except ImportError as error:
        raise SweepError("the sweep needs uv: `pip install uv` (tox -e sweep installs it)") from error
    return [sys.executable, "-m", "uv"]


def index_options() -> list[str]:
    """pip's index settings (find-links, extra index, e.g. PyTorch's CPU index) spelled for uv; the
    best match over all indexes wins, as with pip, so torch==2.13.0 installs as 2.13.0+cpu."""
    options = ["--index-strategy", "unsafe-best-match"]
    for link in os.environ.get("PIP_FIND_LINKS", "").split():
        options += ["--find-links", link]
    for url in os.environ.get("PIP_EXTRA_INDEX_URL", "").split():
        options += ["--extra-index-url", url]
    return options


def interpreter_version(python: str) -> str:
    """`sys.version` of `python`: environments are keyed by it, so an unusable `--python` stops here."""
    found = subprocess.run([python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True)
    if found.returncode:
        raise SweepError(f"--python {python}: {last_line(found.stderr)}")
    return found.stdout.strip()


class Environments:
    """Makes and reuses the environments under `<cache>/envs/` (the `Sweeper` runs the suite in them)."""

    def __init__(self, cache: Path, python: str, timeout: float = 1800):
        self.cache, self.python, self.timeout = cache, python, timeout
        # Environments are keyed by the interpreter's version, not its path (a tox env or a venv
        # of the same Python makes the same environments).
        self.python_version = sys.version if python == sys.executable else interpreter_version(python)
        self.env = {**os.environ, "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(cache / "uv"))}
        self.env.pop("VIRTUAL_ENV", None)
        # Each environment writes the bytecode of what it imports (a fresh env has none: uv does
        # not compile), so the suite does not recompile torch and transformers on every start.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env.pop("PIP_CONSTRAINT", None)  # tox sets it to constraints.txt, the newest TRL
        self.compiling = threading.Lock()

    @property
    def uv(self) -> list[str]:
        return uv_command()

    def run(self, command: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, **{"env": self.env, **kwargs})

    def install(self, release: str, env: Path, row: Row) -> bool:
        """Make `env` hold `release` with the newest transformers it imports with; False (and the
        row's status says why) when it cannot."""
        key = install_key(release, self.python_version)
        marker = env / "policyload-sweep.json"
        if marker.exists():
            recorded = json.loads(marker.read_text())
            if recorded.get("install_key") == key:
                row.transformers, row.requires = recorded["transformers"], recorded["requires"]
                row.notes += recorded["notes"]
                return True
        shutil.rmtree(env, ignore_errors=True)
        made = self.run([*self.uv, "venv", "--quiet", "--python", self.python, str(env)])
        if made.returncode:
            row.status = f"install failed: uv venv: {last_line(made.stderr)}"
            return False
        python = str(env / "bin" / "python")
        breaks = known_breaks(release)
        caps = [b.transformers for b in breaks]
        row.notes += [f"transformers{b.transformers}: {b.reason}" for b in breaks]
        reason = None  # why the last transformers tried did not import
        for _ in range(MAX_FALLBACKS + 1):
            started = time.monotonic()
            requirement = "transformers" + (",".join(caps) if caps else "")
            constraints = [option for name in CONSTRAINTS for option in ("-c", str(ROOT / name))]
            installed = self.run(
                [*self.uv, "pip", "install", "--quiet", "--python", python, *index_options(), *constraints,
                 f"trl=={release}", requirement, *PACKAGES],
                timeout=self.timeout,
            )  # fmt: skip
            if installed.returncode:
                failure = last_line(installed.stderr)
                row.status = f"import failed: {reason}; no older transformers installs ({failure})" if reason else (
                    f"install failed: {failure}"
                )
                return False
            self.precompile()
            row.phases["install"] = round(row.phases.get("install", 0) + time.monotonic() - started, 1)
            started = time.monotonic()
            probe = self.run(
                [python, "-c", PROBE], timeout=600, env={**self.env, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"}
            )
            row.phases["import"] = round(row.phases.get("import", 0) + time.monotonic() - started, 1)
            if probe.returncode == 0:
                facts = json.loads(probe.stdout.strip().splitlines()[-1])
                row.transformers, row.requires = facts["transformers"], facts["requires"]
                marker.write_text(json.dumps({"install_key": key, **facts, "notes": row.notes}, indent=1))
                return True
            version = self.run([python, "-c", "from importlib.metadata import version; print(version('transformers'))"])
            reason = last_line(probe.stderr)
            if version.returncode:
                row.status = f"import failed: {reason}"
                return False
            current = Version(version.stdout.strip())
            cap = f"<{current.major}.{current.minor}" if current.minor else f"<{current.major}"
            row.notes.append(f"transformers {current}: `import trl.scripts.dpo` failed ({reason}); retried with {cap}")
            caps.append(cap)
        row.status = f"import failed: {reason} (after {MAX_FALLBACKS} transformers fallbacks)"
        return False

    def precompile(self) -> None:
        """Compile the wheels uv has unpacked into its cache, once: uv hard-links an environment's
        files from there, `__pycache__` included, so every later environment starts with the
        bytecode of torch, transformers & co. (the same source file, so the same mtime and
        size, so valid). TRL, one version per environment, is left to each environment."""
        archives = Path(self.env["UV_CACHE_DIR"]) / "archive-v0"
        done_file = self.cache / "compiled.json"
        with self.compiling:
            done = set(json.loads(done_file.read_text())) if done_file.exists() else set()
            new = [
                folder for folder in sorted(archives.glob("*"))
                if folder.is_dir() and folder.name not in done and not LAZY & {p.name for p in folder.iterdir()}
            ]  # fmt: skip
            if new:
                self.run([self.python, "-m", "compileall", "-q", "-j", "2", *map(str, new)], timeout=self.timeout)
                done_file.write_text(json.dumps(sorted(done | {folder.name for folder in new})))
