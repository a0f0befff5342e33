"""Session fixtures of the conformance suite, and the report header naming what was checked.

The hub cache and the remote-code module cache are redirected before transformers is imported
(both are read from the environment at import time): the suite reads only the fixture repo, and
remote code it imports lands in a folder removed at the end of the session.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

_FIXTURES_ROOT = Path(os.environ.get("POLICYLOAD_FIXTURES", Path.home() / ".cache" / "policyload" / "fixtures"))
os.environ["HF_HUB_CACHE"] = str(_FIXTURES_ROOT / "hub-cache")
_MODULES_CACHE = tempfile.mkdtemp(prefix="policyload-hf-modules-")
os.environ["HF_MODULES_CACHE"] = _MODULES_CACHE

import pytest  # noqa: E402

from fixtures.checkpoints import TINY_ARCHITECTURES, tiny_checkpoint  # noqa: E402
from fixtures.hub_cache import hub_cache  # noqa: E402
from fixtures.preference_data import preference_dataset  # noqa: E402
from fixtures.remote_code import remote_code_checkpoint  # noqa: E402

from .implementation import COMPARISONS, ENV, selected  # noqa: E402
from .trl_release import FACTS, TRL, describe  # noqa: E402


def pytest_report_header(config):
    from importlib.metadata import version

    import torch

    packages = ("trl", "transformers", "torch", "bitsandbytes", "accelerate")
    versions = ", ".join(f"{name} {version(name)}" for name in packages)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    implementation = selected()
    return [
        f"policyload conformance: {versions}; device {device}",
        f"trl {TRL} facts: {describe(FACTS)}",
        f"implementation under test: {implementation.name} ({implementation.description})",
    ]


def pytest_addoption(parser):
    parser.addoption(
        "--observations",
        metavar="PATH",
        help=(
            "write, per recipe case, what TRL's recipe passed to from_pretrained "
            "(JSON; input of python -m policyload.drift)"
        ),
    )
    parser.addoption(
        "--implementation",
        metavar="NAME|MODULE:OBJECT",
        help=f"the implementation under test (default: ${ENV}, else the reference); see conformance/implementation.py",
    )
    parser.addoption(
        "--compatibility",
        metavar="PATH",
        help="write, per level, which cases agreed with TRL and the first difference of the others "
        "(JSON; input of python -m conformance.compatibility)",
    )


def pytest_configure(config):
    """`--implementation` before any test module is imported (the divergence file is read at import)."""
    if config.getoption("--implementation"):
        os.environ[ENV] = config.getoption("--implementation")
        selected.cache_clear()
    try:
        selected().check_installed()  # a bad name or a missing framework fails here, before collection
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None


#: Modules that check policyload itself (its loads and placements), outside the adapter protocol.
REFERENCE_ONLY_MODULES = {
    "test_loading.py", "test_placement.py", "test_distributed.py", "test_revision_remote_code.py",
    "test_topology_contract.py",
}  # fmt: skip


def pytest_collection_modifyitems(config, items):
    implementation = selected()
    if implementation.is_reference:
        return
    reason = f"checks policyload's own loads, outside the adapter protocol (implementation {implementation.name!r})"
    for item in items:
        if item.path.name in REFERENCE_ONLY_MODULES:
            item.add_marker(pytest.mark.skip(reason=reason))


#: What TRL's recipe did, by case id, kept for the drift report (`--observations`) in `config.stash`.
OBSERVATIONS = pytest.StashKey[dict]()


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_MODULES_CACHE, ignore_errors=True)
    path = session.config.getoption("--observations")
    observations = session.config.stash.get(OBSERVATIONS, {})
    if path and observations:
        from importlib.metadata import version

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        record = {"trl": str(TRL), "transformers": version("transformers"), "observations": observations}
        Path(path).write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
    path = session.config.getoption("--compatibility")
    if path:
        from .compatibility import recording

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(recording(selected(), COMPARISONS), indent=1, sort_keys=True))


@pytest.fixture(scope="session")
def record_observation(pytestconfig):
    """`record_observation(case_id, outcome)`: keep what TRL did for the drift report."""
    observations = pytestconfig.stash.setdefault(OBSERVATIONS, {})

    def record(case_id: str, outcome) -> None:
        from .trl_oracle import observation_json

        observations[case_id] = {"error": outcome.error} if outcome.error else observation_json(outcome.value)

    return record


@pytest.fixture(scope="session")
def tiny_checkpoints() -> dict:
    return {architecture: tiny_checkpoint(architecture) for architecture in TINY_ARCHITECTURES}


@pytest.fixture(scope="session")
def hub_revisions():
    return hub_cache(Path(os.environ["HF_HUB_CACHE"]))


@pytest.fixture(scope="session")
def remote_code_path() -> Path:
    return remote_code_checkpoint()


@pytest.fixture(scope="session")
def preference_data() -> Path:
    return preference_dataset()


@pytest.fixture(scope="session")
def dpo_checkpoint(tiny_checkpoints, tmp_path_factory):
    """The tiny Llama with a tokenizer beside it: TRL's recipe (and a framework's DPO path) loads its
    processing class from the path."""
    from fixtures.preference_data import ROWS
    from policyload.plan.trainer import word_tokenizer

    folder = tmp_path_factory.mktemp("dpo-checkpoint")
    for file in tiny_checkpoints["llama"].iterdir():
        shutil.copy(file, folder / file.name)
    word_tokenizer(ROWS).save_pretrained(folder)
    return folder
