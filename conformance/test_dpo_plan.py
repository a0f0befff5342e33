"""`plan_dpo_loads` against TRL's own `DPOTrainer` construction: EVERY outermost `from_pretrained`
call is recorded (and really made, on a tiny checkpoint), and the sequence must equal the plan.

CPU, distributed type NO: the cases this machine can construct for real. PEFT cases need peft.
"""

from __future__ import annotations

import importlib.util
from unittest import mock

import pytest
import torch

from fixtures.preference_data import ROWS
from policyload import LoadSpec, Topology
from policyload.plan import TRL_RELEASE, DPOOptions

from .cases import DPO_PLAN_LEVEL
from .implementation import record_comparison, selected
from .trl_oracle import comparable_kwargs
from .trl_release import TRL
from .upstream_patches import _classes_with_own_from_pretrained

# plan_dpo_loads describes one release's DPOTrainer; the others' plans are open work (issue 11).
pytestmark = pytest.mark.skipif(
    TRL.base_version.rsplit(".", 1)[0] != TRL_RELEASE,
    reason=f"requires trl {TRL_RELEASE}.x: plan_dpo_loads describes that release's DPOTrainer, not trl {TRL}",
)


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({word for row in ROWS for text in row.values() for word in text.split()})
    vocab = {token: i for i, token in enumerate(["<unk>", "<pad>", "<eos>", *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")


def record_trainer_loads(path: str, spec: LoadSpec, options: DPOOptions, output_dir) -> list[tuple[str, dict]]:
    """Construct TRL's DPOTrainer as `scripts/dpo.py` does; return every outermost from_pretrained call."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    originals = {cls: cls.__dict__["from_pretrained"] for cls in _classes_with_own_from_pretrained()}
    calls, depth = [], [0]

    def replacement(cls, model_path, *args, **kwargs):
        if depth[0] == 0:
            calls.append((str(model_path), dict(kwargs)))
        owner = next(klass for klass in cls.__mro__ if klass in originals)
        depth[0] += 1
        try:
            return originals[owner].__func__(cls, model_path, *args, **kwargs)
        finally:
            depth[0] -= 1

    # scripts/dpo.py: model_init_kwargs = dict(revision, trust_remote_code, attn_implementation, dtype)
    model_init_kwargs = dict(
        revision=spec.model_revision,
        trust_remote_code=spec.trust_remote_code,
        attn_implementation=spec.attn_implementation,
        dtype=spec.dtype,
    )
    args = DPOConfig(
        output_dir=str(output_dir),
        report_to="none",
        bf16=False,
        model_init_kwargs=model_init_kwargs,
        precompute_ref_log_probs=options.precompute_ref_log_probs,
        per_device_train_batch_size=2,
    )
    with mock.patch.multiple("torch.cuda", is_available=lambda: False), _patched(originals, replacement):
        DPOTrainer(model=path, args=args, train_dataset=Dataset.from_list(ROWS), processing_class=_tokenizer())
    return calls


class _patched:
    def __init__(self, originals, replacement):
        self.patches = [mock.patch.object(cls, "from_pretrained", classmethod(replacement)) for cls in originals]

    def __enter__(self):
        for patch in self.patches:
            patch.start()

    def __exit__(self, *exc):
        for patch in reversed(self.patches):
            patch.stop()


def _plan_calls(path: str, spec: LoadSpec, options: DPOOptions) -> list[tuple[str, dict]]:
    """The implementation under test's plan (the reference's `plan_dpo_loads` by default) as calls."""
    plan = selected().function(DPO_PLAN_LEVEL)(spec, options, Topology(None))
    return [(path, comparable_kwargs(load.kwargs)) for load in plan.loads]


def _first_difference(planned: list, recorded: list) -> str | None:
    """The first load where the plan and TRL's calls differ, one line (the compatibility table's cell)."""
    for index, (ours, trl) in enumerate(zip(planned, recorded, strict=False)):
        if ours != trl:
            return f"load {index}: {selected().name} {ours!r}, TRL {trl!r}"
    return None if len(planned) == len(recorded) else f"{selected().name} {len(planned)} loads, TRL {len(recorded)}"


@pytest.mark.parametrize(
    "options",
    [DPOOptions(), DPOOptions(precompute_ref_log_probs=True)],
    ids=["full-finetune", "precompute"],
)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_trainer_loads_match_plan(options, dtype, tiny_checkpoints, tmp_path, request):
    path = str(tiny_checkpoints["llama"])
    spec = LoadSpec(path, dtype=dtype)
    planned = _plan_calls(path, spec, options)
    recorded = [(p, comparable_kwargs(k)) for p, k in record_trainer_loads(path, spec, options, tmp_path)]
    record_comparison(DPO_PLAN_LEVEL, request.node.callspec.id, _first_difference(planned, recorded))
    assert recorded == planned


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="requires peft")
def test_peft_trainer_loads_only_the_policy(tiny_checkpoints, tmp_path):
    pytest.skip("requires peft: the recorded run with a LoraConfig is not written yet")


def test_recorder_sees_every_call(tiny_checkpoints, tmp_path):
    """The recorder is not blind: a full fine-tune makes exactly two loads, both recorded with dtype."""
    path = str(tiny_checkpoints["llama"])
    recorded = record_trainer_loads(path, LoadSpec(path, dtype="float32"), DPOOptions(), tmp_path)
    assert len(recorded) == 2 and all(kwargs["dtype"] == torch.float32 for _, kwargs in recorded)
