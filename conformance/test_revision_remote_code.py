"""Level 5: `model_revision` really selects a revision; remote code runs only when trusted;
unreadable checkpoints fail clearly and leave nothing behind."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from fixtures.remote_code import MARKER_ENV
from policyload import CheckpointError, LoadSpec, load_policy


@pytest.mark.parametrize("revision", ["main", "v2", "commit-of-v2"])
def test_revision_loads_the_revision_asked_for(revision, hub_revisions):
    name = "v2" if revision == "commit-of-v2" else revision
    asked = hub_revisions.commits["v2"] if revision == "commit-of-v2" else revision
    repo_folder = hub_revisions.cache_dir / f"models--{hub_revisions.repo_id.replace('/', '--')}"
    snapshot = repo_folder / "snapshots" / hub_revisions.commits[name]

    model = load_policy(LoadSpec(hub_revisions.repo_id, model_revision=asked, dtype="float32"))

    assert model.config.num_hidden_layers == hub_revisions.layers[name]
    saved = load_file(snapshot / "model.safetensors")["model.embed_tokens.weight"].float()
    assert torch.equal(model.get_input_embeddings().weight, saved)


def test_unknown_revision_is_a_clear_error(hub_revisions):
    with pytest.raises(CheckpointError, match="revision 'no-such-branch'"):
        load_policy(LoadSpec(hub_revisions.repo_id, model_revision="no-such-branch"))


@pytest.fixture
def marker(tmp_path, monkeypatch):
    path = tmp_path / "remote-code-imported"
    monkeypatch.setenv(MARKER_ENV, str(path))
    return path


def test_untrusted_remote_code_is_refused_and_never_runs(remote_code_path, marker):
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_policy(LoadSpec(str(remote_code_path), trust_remote_code=False))
    assert not marker.exists()


def test_trusted_remote_code_loads(remote_code_path, marker):
    model = load_policy(LoadSpec(str(remote_code_path), trust_remote_code=True, dtype="float32"))
    assert (type(model).__name__, marker.exists()) == ("MarkerForCausalLM", True)


def listing(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(CheckpointError, match=f"cannot load policy checkpoint '{missing}'"):
        load_policy(LoadSpec(str(missing)))
    assert listing(tmp_path) == []


@pytest.mark.parametrize("quantization", ["none", "4bit"])
def test_truncated_safetensors_is_a_clear_error_and_leaves_nothing(quantization, tiny_checkpoints, tmp_path):
    checkpoint = shutil.copytree(tiny_checkpoints["llama"], tmp_path / "truncated")
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    before = listing(tmp_path)
    allocated = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    spec = LoadSpec(str(checkpoint), dtype="bfloat16", load_in_4bit=quantization == "4bit")

    with pytest.raises(CheckpointError, match="SafetensorError"):
        load_policy(spec)

    assert listing(tmp_path) == before
    assert (torch.cuda.memory_allocated() if torch.cuda.is_available() else 0) == allocated
